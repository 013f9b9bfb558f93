package main

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/npy"
	"github.com/stretchr/testify/require"
)

// runInputs writes q, k, v of [1, L, H, D] (H = Hkv) as float32 .npy files in dir
// and returns the flags that name them.
func runInputs(t *testing.T, dir string, l, h, d int) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	var args []string
	for _, name := range []string{"q", "k", "v"} {
		x := make([]float32, l*h*d)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		p := filepath.Join(dir, name+".npy")
		require.NoError(t, npy.WriteFloat32(p, []int{1, l, h, d}, x))
		args = append(args, "--"+name, p)
	}
	return append(args, "--o", filepath.Join(dir, "o.npy"), "--lse", filepath.Join(dir, "lse.npy"))
}

// runCLI runs "dmavk run args..." and returns the exit status, stdout, stderr and
// what the command noted beside its results.
func runCLI(t *testing.T, args ...string) (int, string, string, string) {
	t.Helper()
	var stdout, stderr, notes bytes.Buffer
	old := runNotes
	runNotes = &notes
	defer func() { runNotes = old }()
	rc := dispatch(append([]string{"run"}, args...), &stdout, &stderr)
	return rc, stdout.String(), stderr.String(), notes.String()
}

func readO(t *testing.T, dir string) []float32 {
	t.Helper()
	a, err := npy.Read(filepath.Join(dir, "o.npy"))
	require.NoError(t, err)
	return a.Data
}

// A float mask is ambiguous (PyTorch's additive masks are 0 keep, -inf drop): it is
// refused with a message that says how to save a bool mask and where an additive one goes.
func TestRunRefusesFloatMask(t *testing.T) {
	instanceOrSkip(t)
	dir := t.TempDir()
	const l = 9
	args := runInputs(t, dir, l, 1, 8)
	additive := make([]float32, l*l)
	for i := range l {
		for j := i + 1; j < l; j++ {
			additive[i*l+j] = float32(math.Inf(-1))
		}
	}
	mask := filepath.Join(dir, "mask.npy")
	require.NoError(t, npy.WriteFloat32(mask, []int{1, 1, l, l}, additive))
	rc, _, stderr, _ := runCLI(t, append(args, "--mode", "explicit", "--causal=false", "--mask", mask)...)
	require.Equal(t, 1, rc, stderr)
	require.Contains(t, stderr, "--mask")
	require.Contains(t, stderr, "want a bool array")
	require.Contains(t, stderr, "astype(bool)")
	require.Contains(t, stderr, "--bias")

	pad := filepath.Join(dir, "pad.npy")
	require.NoError(t, npy.WriteFloat32(pad, []int{1, l}, make([]float32, l)))
	rc, _, stderr, _ = runCLI(t, append(args, "--mode", "none", "--key-padding", pad)...)
	require.Equal(t, 1, rc, stderr)
	require.Contains(t, stderr, "--key-padding")
	require.Contains(t, stderr, "want a bool array")

	boolBias := filepath.Join(dir, "boolbias.npy")
	require.NoError(t, npy.WriteBool(boolBias, []int{1, 1, l, l}, make([]bool, l*l)))
	rc, _, stderr, _ = runCLI(t, append(args, "--mode", "explicit", "--bias", boolBias)...)
	require.Equal(t, 1, rc, stderr)
	require.Contains(t, stderr, "--bias")
	require.Contains(t, stderr, "a bool mask goes to --mask")
}

// The additive form through --bias and the bool form through --mask give the same
// attention: both keep the causal keys only.
func TestRunAdditiveBiasMatchesBoolMask(t *testing.T) {
	instanceOrSkip(t)
	dir := t.TempDir()
	const l = 13
	args := append(runInputs(t, dir, l, 2, 16), "--mode", "explicit", "--causal=false")
	keep := make([]bool, l*l)
	additive := make([]float32, l*l)
	for i := range l {
		for j := range l {
			keep[i*l+j] = j <= i
			if j > i {
				additive[i*l+j] = float32(math.Inf(-1))
			}
		}
	}
	mask := filepath.Join(dir, "mask.npy")
	bias := filepath.Join(dir, "bias.npy")
	require.NoError(t, npy.WriteBool(mask, []int{1, 1, l, l}, keep))
	require.NoError(t, npy.WriteFloat32(bias, []int{1, 1, l, l}, additive))

	rc, _, stderr, _ := runCLI(t, append(args, "--mask", mask)...)
	require.Equal(t, 0, rc, stderr)
	withMask := readO(t, dir)
	rc, _, stderr, _ = runCLI(t, append(args, "--bias", bias)...)
	require.Equal(t, 0, rc, stderr)
	withBias := readO(t, dir)
	require.InDeltaSlice(t, withMask, withBias, 1e-5)

	// And both equal causal dense attention (mode none).
	base := runInputs(t, dir, l, 2, 16)
	rc, _, stderr, _ = runCLI(t, append(base, "--mode", "none")...)
	require.Equal(t, 0, rc, stderr)
	require.InDeltaSlice(t, readO(t, dir), withMask, 1e-5)
}

// Weight flags that would be ignored, or that contradict each other, are usage errors
// that name the missing or extra flag.
func TestRunWeightFlagsNeedWdt(t *testing.T) {
	instanceOrSkip(t)
	dir := t.TempDir()
	args := runInputs(t, dir, 8, 1, 8)
	vec := filepath.Join(dir, "vec.npy")
	require.NoError(t, npy.WriteFloat32(vec, []int{1}, []float32{0.5}))
	wdt := filepath.Join(dir, "wdt.npy")
	require.NoError(t, npy.WriteFloat32(wdt, []int{8, 1}, make([]float32, 8)))
	w := filepath.Join(dir, "w.npy")
	require.NoError(t, npy.WriteFloat32(w, []int{1, 1, 8}, make([]float32, 8)))
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{[]string{"--bdt", vec}, "--bdt needs --wdt"},
		{[]string{"--a", vec}, "--a needs --wdt"},
		{[]string{"--form", "linear"}, "--form needs --wdt"},
		{[]string{"--wdt", wdt}, "--wdt needs --a"},
		{[]string{"--wdt", wdt, "--a", vec, "--weights", w}, "--weights and --wdt both"},
		{nil, "--mode row selects keys by their weights: give --weights"},
		{[]string{"--mode", "shared"}, "--mode shared selects keys by their weights"},
	} {
		rc, _, stderr, _ := runCLI(t, append(args, tc.extra...)...)
		require.Equal(t, 2, rc, "%v: %s", tc.extra, stderr)
		require.Contains(t, stderr, tc.want, "%v", tc.extra)
	}
	// With --wdt, --a and --bdt it runs.
	rc, _, stderr, _ := runCLI(t, append(args, "--wdt", wdt, "--a", vec, "--bdt", vec)...)
	require.Equal(t, 0, rc, stderr)
}

// The kernel path that ran is said on stderr and in --json.
func TestRunReportsPath(t *testing.T) {
	instanceOrSkip(t)
	dir := t.TempDir()
	args := append(runInputs(t, dir, 10, 1, 8), "--mode", "none")
	rc, stdout, stderr, notes := runCLI(t, args...)
	require.Equal(t, 0, rc, stderr)
	require.Regexp(t, `path (portable|coopmat|coopmat2|decode)\b`, notes)
	require.Contains(t, stdout, "path ")

	rc, stdout, stderr, notes = runCLI(t, append(args, "--json")...)
	require.Equal(t, 0, rc, stderr)
	var rep runReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.NotEmpty(t, rep.Device)
	require.Contains(t, notes, "path "+rep.Path)
	require.Contains(t, []string{"portable", "coopmat", "coopmat2", "decode"}, rep.Path)
	require.Equal(t, []int{1, 10, 1, 8}, rep.O.Shape)
	require.Equal(t, []int{1, 1, 10}, rep.LSE.Shape)
	require.Nil(t, rep.Weights)
}

// float64 files are read and rounded to float32, as documented: the result equals the
// float32 files' result exactly.
func TestRunReadsFloat64(t *testing.T) {
	instanceOrSkip(t)
	dir := t.TempDir()
	args := append(runInputs(t, dir, 11, 1, 8), "--mode", "none")
	rc, _, stderr, _ := runCLI(t, args...)
	require.Equal(t, 0, rc, stderr)
	want := readO(t, dir)
	for _, name := range []string{"q", "k", "v"} {
		p := filepath.Join(dir, name+".npy")
		a, err := npy.Read(p)
		require.NoError(t, err)
		wide := make([]float64, len(a.Data))
		for i, x := range a.Data {
			wide[i] = float64(x)
		}
		require.NoError(t, npy.WriteFloat64(p, a.Shape, wide))
	}
	rc, _, stderr, _ = runCLI(t, args...)
	require.Equal(t, 0, rc, stderr)
	require.Equal(t, want, readO(t, dir))
	require.False(t, strings.Contains(stderr, "error"))
}
