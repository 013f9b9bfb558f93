package kern

// SetCM2MaxPackBytes caps one GK/GV buffer of the coopmat2 path at n bytes (forcing the
// split over several buffers) until the returned function restores the previous cap.
func SetCM2MaxPackBytes(n int64) (restore func()) {
	old := cm2MaxPackBytes
	cm2MaxPackBytes = n
	return func() { cm2MaxPackBytes = old }
}

// SetDecodeRows sets the rows of a decode_attn split workgroup (0: by subgroup size)
// until the returned function restores the previous setting.
func SetDecodeRows(n uint32) (restore func()) {
	old := decodeRowsOverride
	decodeRowsOverride = n
	return func() { decodeRowsOverride = old }
}
