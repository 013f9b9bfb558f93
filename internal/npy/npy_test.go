package npy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.npy")
	require.NoError(t, WriteFloat32(p, []int{2, 3}, []float32{1, 2, 3, 4, 5, -6.5}))
	a, err := Read(p)
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, a.Shape)
	require.Equal(t, "<f4", a.DType)
	require.Equal(t, []float32{1, 2, 3, 4, 5, -6.5}, a.Data)
	raw, _ := os.ReadFile(p)
	require.Zero(t, (len(raw)-6*4)%64, "data must start 64-byte aligned")

	p16 := filepath.Join(dir, "h.npy")
	require.NoError(t, WriteFloat16(p16, []int{3}, []uint16{0x3c00, 0xc000, 0x7c00}))
	h, err := Read(p16)
	require.NoError(t, err)
	require.Equal(t, []int{3}, h.Shape)
	require.Equal(t, []uint16{0x3c00, 0xc000, 0x7c00}, h.Half)
	require.Equal(t, float32(-2), h.Data[1])

	pb := filepath.Join(dir, "b.npy")
	require.NoError(t, WriteBool(pb, []int{1, 3}, []bool{true, false, true}))
	b, err := Read(pb)
	require.NoError(t, err)
	require.Equal(t, "|b1", b.DType)
	require.Equal(t, []float32{1, 0, 1}, b.Data)

	p64 := filepath.Join(dir, "d.npy")
	require.NoError(t, WriteFloat64(p64, []int{2}, []float64{0.1, -3}))
	d, err := Read(p64)
	require.NoError(t, err)
	require.Equal(t, "<f8", d.DType)
	require.Equal(t, []float32{0.1, -3}, d.Data, "float64 is rounded to nearest float32")
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.npy")
	require.NoError(t, os.WriteFile(bad, []byte("hello"), 0o644))
	_, err := Read(bad)
	require.ErrorContains(t, err, "not an .npy file")
	require.Error(t, WriteFloat32(filepath.Join(dir, "x.npy"), []int{2, 2}, []float32{1}))
	// Truncated data.
	p := filepath.Join(dir, "t.npy")
	require.NoError(t, WriteFloat32(p, []int{4}, []float32{1, 2, 3, 4}))
	raw, _ := os.ReadFile(p)
	require.NoError(t, os.WriteFile(p, raw[:len(raw)-3], 0o644))
	_, err = Read(p)
	require.ErrorContains(t, err, "shorter")
	// Unsupported dtype.
	raw = append(header("<i8", []int{1}), make([]byte, 8)...)
	require.NoError(t, os.WriteFile(p, raw, 0o644))
	_, err = Read(p)
	require.ErrorContains(t, err, "not supported")
}
