package doge_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/dmavk/dmavk/doge"
	"github.com/stretchr/testify/require"
)

// TestPrefillContinues: a prompt given in several Prefill calls, with decode steps
// between them (a conversation's turns), gives at every position the logits of one
// Prefill over all of it, within 1e-4 of max |logit| in float32, and transformers'
// logits at the reference positions. Pieces end off the chunk size and off the window
// (keep_window_size 64), one is a single token. The fixtures whose prompts one pass
// must route (CDMoE) or rotate (dynamic RoPE past max_position_embeddings) together are
// left out: transformers' own passes differ there; the RoPE fixture runs below its
// max_position_embeddings (256), where the rotation does not depend on the pass.
func TestPrefillContinues(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		opt    doge.Options
		prompt int   // tokens of the prompt used
		pieces []int // Prefill calls of these sizes; a negative one is that many Steps
		tol    float64
	}{
		{"tiny", doge.Options{}, 300, []int{137, 163}, 1e-4},
		{"tiny", doge.Options{PrefillChunk: 64}, 300, []int{50, 1, 70, -5, 100, 74}, 1e-4},
		{"tiny", doge.Options{PrefillChunk: 16}, 300, []int{-1, 65, -3, 231}, 1e-4},
		{"rope", doge.Options{}, 250, []int{120, -2, 128}, 1e-4},
		{"rope", doge.Options{Half: true, PrefillChunk: 32}, 250, []int{100, 150}, 2e-3},
	} {
		t.Run(fmt.Sprintf("%s/half=%v/chunk=%d/%v", c.name, c.opt.Half, c.opt.PrefillChunk, c.pieces), func(t *testing.T) {
			m, ref := loadFixture(t, n, c.name, c.opt)
			vocab := m.Cfg.VocabSize
			ids := ref.ints(t, "prompt_ids")[:c.prompt]
			once, err := m.NewState(1, len(ids))
			require.NoError(t, err)
			defer once.Close()
			want, err := once.PrefillAll(ctx, 0, ids)
			require.NoError(t, err)
			if c.prompt == 300 && !c.opt.Half {
				var at []float32
				for _, p := range ref.ints(t, "positions") {
					at = append(at, want[p*vocab:(p+1)*vocab]...)
				}
				closeRows(t, ref.floats(t, "prefill_logits"), at, vocab, c.tol, "one prefill against transformers")
			}

			st, err := m.NewState(2, len(ids))
			require.NoError(t, err)
			defer st.Close()
			// Sequence 0 holds other tokens: the pieces go to sequence 1.
			_, err = st.Prefill(ctx, 0, ids[len(ids)-40:])
			require.NoError(t, err)
			var got []float32
			at := 0
			for _, p := range c.pieces {
				if p < 0 {
					for range -p {
						var l []float32
						if at == 0 { // a sequence starts with a prompt
							l, err = st.PrefillAll(ctx, 1, ids[:1])
						} else {
							l, err = st.Step(ctx, []int{1}, []int{ids[at]})
						}
						require.NoError(t, err)
						got = append(got, l...)
						at++
					}
					continue
				}
				l, err := st.PrefillAll(ctx, 1, ids[at:at+p])
				require.NoError(t, err)
				got = append(got, l...)
				at += p
				require.Equal(t, at, st.Len(1))
			}
			require.Equal(t, len(ids), at)
			closeRows(t, want, got, vocab, c.tol, "pieces against one prefill")
		})
	}
}
