package kern

// SetCM2MaxPackBytes caps one GK/GV buffer of the coopmat2 path at n bytes (forcing the
// split over several buffers) until the returned function restores the previous cap.
func SetCM2MaxPackBytes(n int64) (restore func()) {
	old := cm2MaxPackBytes
	cm2MaxPackBytes = n
	return func() { cm2MaxPackBytes = old }
}
