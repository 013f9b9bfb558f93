package doge_test

import (
	"context"
	"testing"
	"time"

	"github.com/dmavk/dmavk/doge"
	"github.com/dmavk/dmavk/internal/memprobe"
	"github.com/stretchr/testify/require"
)

// TestStateLeaks: states made, prefilled, stepped (recordings made, reused and
// re-recorded at each phase change, sets of sequences changing) and closed, many times,
// leave the process no larger. Skipped with -short and under the race detector.
func TestStateLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("leak test skipped with -short")
	}
	if raceEnabled {
		t.Skip("leak test skipped under the race detector")
	}
	n := openNN(t)
	ctx := context.Background()
	m, ref := loadFixture(t, n, "tiny", doge.Options{})
	ids := ref.ints(t, "prompt_ids")
	cycle := func() error {
		st, err := m.NewState(2, 96)
		if err != nil {
			return err
		}
		defer st.Close()
		for s, l := range []int{60, 20} {
			if _, err := st.Prefill(ctx, s, ids[:l]); err != nil {
				return err
			}
		}
		for i := 0; i < 12; i++ {
			seqs := []int{0, 1}
			if i%4 == 3 {
				seqs = []int{1}
			}
			if _, err := st.Step(ctx, seqs, ids[i:i+len(seqs)]); err != nil {
				return err
			}
		}
		return nil
	}
	const cycles, warm = 60, 15
	var before int64
	start := time.Now()
	for i := range cycles {
		if i == warm {
			var err error
			before, err = memprobe.SettledRSS()
			require.NoError(t, err)
			start = time.Now()
		}
		require.NoError(t, cycle(), "cycle %d", i)
	}
	after, err := memprobe.SettledRSS()
	require.NoError(t, err)
	growth := after - before
	t.Logf("%d cycles in %v: RSS %.1f MiB -> %.1f MiB (%+.2f MiB)", cycles-warm, time.Since(start).Round(time.Millisecond), float64(before)/(1<<20), float64(after)/(1<<20), float64(growth)/(1<<20))
	// A cycle allocates two caches' worth of device buffers per layer and records a
	// dozen programs: anything kept by mistake exceeds this many times over.
	require.LessOrEqualf(t, growth, int64(16<<20), "RSS grew by %.1f MiB", float64(growth)/(1<<20))
}
