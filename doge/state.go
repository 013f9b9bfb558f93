package doge

import (
	"context"
	"fmt"
	"sync"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
	"github.com/dmavk/dmavk/vk"
)

// DefaultPrefillChunk is the rows of a prompt that the linear layers, the MLP and one
// attention call take at once, unless Options.PrefillChunk says otherwise. Large, since
// every chunk pays a selection over the cache's keys and small products fill the GPU
// poorly (Doge-160M's shape at 32K on an H200: 0.47 s in one chunk, 1.18 s in chunks
// of 4096, bench/NOTES.md), and a row's scratch is small (about 25 KB at hidden 768).
const DefaultPrefillChunk = 32768

// State holds the KV caches of up to Sequences sequences of up to Capacity tokens each
// and runs the model over them: Prefill starts a sequence with its prompt, Step adds one
// token to each of several sequences in one recorded submission. Calls on one State are
// serialized; Close it before the model.
type State struct {
	m                   *Model
	Sequences, Capacity int

	mu     sync.Mutex
	caches []*dma.KVCache
	lens   []int
	rope   *nn.RoPE
	steps  map[string]*decodeProgram
	last   StepTiming
	closed bool
}

// NewState allocates the caches.
func (m *Model) NewState(sequences, capacity int) (*State, error) {
	if sequences < 1 || capacity < 1 {
		return nil, fmt.Errorf("doge: NewState: %d sequences of %d tokens", sequences, capacity)
	}
	if m.closed() {
		return nil, fmt.Errorf("doge: NewState: the model is closed")
	}
	s := &State{m: m, Sequences: sequences, Capacity: capacity, lens: make([]int, sequences), rope: m.newRoPE(), steps: map[string]*decodeProgram{}}
	for _, l := range m.layers {
		c, err := m.n.DMA().NewKVCache(l.attn.KVCacheConfig(sequences, capacity))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("doge: NewState: %w", err)
		}
		s.caches = append(s.caches, c)
	}
	return s, nil
}

// Len is the number of tokens sequence seq holds.
func (s *State) Len(seq int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 0 || seq >= len(s.lens) {
		return 0
	}
	return s.lens[seq]
}

// Reset empties sequence seq.
func (s *State) Reset(seq int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 0 || seq >= len(s.lens) {
		return fmt.Errorf("doge: Reset: sequence %d of %d", seq, len(s.lens))
	}
	for _, c := range s.caches {
		if err := c.Reset(seq); err != nil {
			return err
		}
	}
	s.lens[seq] = 0
	return nil
}

// Close frees the caches and recorded steps.
func (s *State) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, p := range s.steps {
		p.close()
	}
	s.steps = nil
	for _, c := range s.caches {
		c.Close()
	}
	s.caches = nil
	return nil
}

func (s *State) checkTokens(tokens []int) error {
	for i, t := range tokens {
		if t < 0 || t >= s.m.Cfg.VocabSize {
			return fmt.Errorf("token %d at %d is outside the vocabulary of %d", t, i, s.m.Cfg.VocabSize)
		}
	}
	return nil
}

// closer collects what a call allocates.
type closer []interface{ Close() error }

func (c *closer) add(x interface{ Close() error }) { *c = append(*c, x) }
func (c closer) close() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i].Close()
	}
}

// Prefill runs tokens through the model after what sequence seq holds, as one forward
// pass of transformers over them with the sequence's earlier tokens in its cache would
// (CDMoE routes the pass's tokens together), and returns the logits of the last
// position ([vocab]). An empty sequence starts with its prompt; a sequence that holds
// tokens (an earlier prompt, decoded steps) continues, e.g. with a conversation's next
// turn. The linear layers, the MLP and attention take the tokens Options.PrefillChunk
// rows at a time: each chunk's queries attend every key up to the chunk's last, cached
// ones included (dma.KVCache.Forward), so a prompt given in several calls gives the
// logits of one call over all of it (dynamic RoPE aside: like transformers, each pass
// rotates its own keys for the length it reaches). On error the sequence keeps what it
// held before.
func (s *State) Prefill(ctx context.Context, seq int, tokens []int) ([]float32, error) {
	return s.prefillCall(ctx, seq, tokens, false)
}

// PrefillAll is Prefill returning the logits of every new position ([len(tokens)*vocab]).
func (s *State) PrefillAll(ctx context.Context, seq int, tokens []int) ([]float32, error) {
	return s.prefillCall(ctx, seq, tokens, true)
}

// Vocab is the vocabulary size (the length of a row of logits).
func (s *State) Vocab() int { return s.m.Cfg.VocabSize }

func (s *State) prefillCall(ctx context.Context, seq int, tokens []int, all bool) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) ([]float32, error) { return nil, fmt.Errorf("doge: Prefill: %w", err) }
	switch {
	case s.closed:
		return fail(fmt.Errorf("the state is closed"))
	case s.m.closed():
		return fail(fmt.Errorf("the model is closed"))
	case seq < 0 || seq >= s.Sequences:
		return fail(fmt.Errorf("sequence %d of %d", seq, s.Sequences))
	case len(tokens) == 0:
		return fail(fmt.Errorf("no tokens"))
	case s.lens[seq]+len(tokens) > s.Capacity:
		return fail(fmt.Errorf("sequence %d holds %d tokens: %d more exceed the capacity %d", seq, s.lens[seq], len(tokens), s.Capacity))
	}
	if err := s.checkTokens(tokens); err != nil {
		return fail(err)
	}
	start := s.lens[seq]
	logits, err := s.prefill(ctx, seq, start, tokens, all)
	if err != nil {
		// The caches may hold some layers' new keys: back to the sequence as it was.
		for _, c := range s.caches {
			c.Truncate(seq, start)
		}
		return fail(err)
	}
	s.lens[seq] = start + len(tokens)
	return logits, nil
}

// prefill runs tokens at positions start, start+1, ... of sequence seq.
func (s *State) prefill(ctx context.Context, seq, start int, tokens []int, all bool) ([]float32, error) {
	m, n := s.m, s.m.n
	c := m.Cfg
	T := len(tokens)
	chunk := min(m.chunk, T)
	var free closer
	defer func() { free.close() }()
	newT := func(dt dma.DType, rows, cols int) (*nn.Tensor, error) {
		t, err := n.NewTensor(dt, rows, cols)
		if err == nil {
			free.add(t)
		}
		return t, err
	}
	f32 := dma.Float32
	var x, xn, ao, mo, cs, ids *nn.Tensor
	var err error
	for _, b := range []struct {
		dst  **nn.Tensor
		cols int
	}{{&x, c.HiddenSize}, {&xn, c.HiddenSize}, {&ao, c.HiddenSize}, {&mo, c.HiddenSize}, {&cs, c.HeadDim}, {&ids, 1}} {
		if *b.dst, err = newT(f32, T, b.cols); err != nil {
			return nil, err
		}
	}
	if err := ids.UploadIDs(ctx, tokens); err != nil {
		return nil, err
	}
	pos := make([]int, T)
	for i := range pos {
		pos[i] = start + i
	}
	if err := cs.Upload(ctx, s.rope.Table(pos, start+T-1)); err != nil {
		return nil, err
	}
	l0 := m.layers[0]
	pb, err := l0.attn.NewProjectBuffers(n, chunk)
	if err != nil {
		return nil, err
	}
	free.add(pb)
	mb, err := l0.mlp.NewBuffers(n, chunk)
	if err != nil {
		return nil, err
	}
	free.add(mb)
	var eb *nn.ExpertBuffers
	if l0.experts != nil {
		if eb, err = l0.experts.NewBuffers(n, T); err != nil {
			return nil, err
		}
		free.add(eb)
	}
	d := n.DMA()
	qkvShape := func(h int) dma.Shape { return dma.Shape{B: 1, L: T, H: h, D: c.HeadDim} }
	// The queries chunk by chunk, each a tensor of its own: attention takes them as they are.
	var qs []*dma.Tensor
	for a := 0; a < T; a += chunk {
		q, err := d.NewTensor(m.DType, dma.Shape{B: 1, L: min(chunk, T-a), H: c.NumAttentionHeads, D: c.HeadDim}, dma.BLHD)
		if err != nil {
			return nil, err
		}
		free.add(q)
		qs = append(qs, q)
	}
	k, err := d.NewTensor(m.DType, qkvShape(c.NumKeyValueHeads), dma.BLHD)
	if err != nil {
		return nil, err
	}
	free.add(k)
	v, err := d.NewTensor(m.DType, qkvShape(c.NumKeyValueHeads), dma.BLHD)
	if err != nil {
		return nil, err
	}
	free.add(v)
	w, err := d.NewWeights(1, c.NumKeyValueHeads, T)
	if err != nil {
		return nil, err
	}
	free.add(w)
	// Attention's output chunk by chunk, beside the queries.
	var outs []*dma.Result
	var attnOut []*nn.Tensor
	for _, q := range qs {
		out, err := d.NewResult(q)
		if err != nil {
			return nil, err
		}
		free.add(out)
		outs = append(outs, out)
		o, _ := nn.ViewOf(out.O)
		attnOut = append(attnOut, o)
	}
	kv, _ := nn.ViewOf(k)
	vv, _ := nn.ViewOf(v)
	rows := func(t *nn.Tensor, a, b int) *nn.Tensor {
		sl, e := t.Slice(a, b)
		if e != nil && err == nil {
			err = e
		}
		return sl
	}
	err = n.Run(ctx, func(r *vk.Recorder) error {
		for a := 0; a < T; a += chunk {
			b := min(a+chunk, T)
			xs, is := rows(x, a, b), rows(ids, a, b)
			if err != nil {
				return err
			}
			if err := m.embed.Record(n, r, xs, is); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for li, l := range m.layers {
		// Projections, norms, RoPE and the dynamic weights of every key, chunk by chunk.
		err = n.Run(ctx, func(r *vk.Recorder) error {
			for a := 0; a < T; a += chunk {
				b := min(a+chunk, T)
				xs, xns := rows(x, a, b), rows(xn, a, b)
				if err != nil {
					return err
				}
				if err := n.RecordRMSNorm(r, xns, xs, l.inNorm, float32(c.RMSNormEps)); err != nil {
					return err
				}
				if err := l.attn.RecordProject(r, pb, xns); err != nil {
					return err
				}
				qa, _ := nn.ViewOf(qs[a/chunk])
				ks, vs, css := rows(kv, a, b), rows(vv, a, b), rows(cs, a, b)
				if err != nil {
					return err
				}
				if err := l.attn.RecordQKV(n, r, pb, 0, b-a, qa, ks, vs, w, a, css); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := s.caches[li].Append(ctx, seq, k, v, w); err != nil {
			return nil, fmt.Errorf("layer %d: %w", li, err)
		}
		if err := s.attendPrompt(ctx, s.caches[li], seq, start, l, qs, outs); err != nil {
			return nil, fmt.Errorf("layer %d: %w", li, err)
		}
		err = n.Run(ctx, func(r *vk.Recorder) error {
			return s.recordPrefillRest(r, l, T, chunk, attnOut, x, xn, ao, mo, pb, mb, eb)
		})
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", li, err)
		}
	}
	// The final norm and the output projection of the rows asked for.
	first := T - 1
	if all {
		first = 0
	}
	out := make([]float32, 0, (T-first)*c.VocabSize)
	lrows := min(256, chunk, T-first) // logits rows at a time: vocab-wide rows are large
	logits, err := newT(f32, lrows, c.VocabSize)
	if err != nil {
		return nil, err
	}
	scratch, err := newT(f32, 1, max(1, m.lmHead.ScratchElems(lrows)))
	if err != nil {
		return nil, err
	}
	for a := first; a < T; a += lrows {
		b := min(a+lrows, T)
		err = n.Run(ctx, func(r *vk.Recorder) error {
			xs, xns, ls := rows(x, a, b), rows(xn, a, b), rows(logits, 0, b-a)
			if err != nil {
				return err
			}
			if err := n.RecordRMSNorm(r, xns, xs, m.norm, float32(c.RMSNormEps)); err != nil {
				return err
			}
			return m.lmHead.Record(r, ls, xns, scratch)
		})
		if err != nil {
			return nil, err
		}
		ls, _ := logits.Slice(0, b-a)
		got, err := ls.Download(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// attendPrompt computes DMA attention of the new queries (positions start onwards of
// sequence seq, whose keys the cache holds already; qs holds them Options.PrefillChunk
// rows to a tensor) into outs (one per chunk): the chunk of queries [a, b) attends the
// sequence's keys [0, start+b), causally (bottom-right aligned).
func (s *State) attendPrompt(ctx context.Context, c *dma.KVCache, seq, start int, l *layer, qs []*dma.Tensor, outs []*dma.Result) error {
	opt := l.attn.Options()
	b := start
	for i, q := range qs {
		b += q.Shape().L
		if err := c.ForwardInto(ctx, seq, b, q, outs[i], opt); err != nil {
			return err
		}
	}
	return nil
}

// recordPrefillRest records a layer after attention over all T rows (attnOut, chunk by
// chunk): the output projection and gated residual, the MLP (or CDMoE) and its gated
// residual.
func (s *State) recordPrefillRest(r *vk.Recorder, l *layer, T, chunk int, attnOut []*nn.Tensor, x, xn, ao, mo *nn.Tensor, pb *nn.ProjectBuffers, mb *nn.MLPBuffers, eb *nn.ExpertBuffers) error {
	n, eps := s.m.n, float32(s.m.Cfg.RMSNormEps)
	for a := 0; a < T; a += chunk {
		b := min(a+chunk, T)
		var vs [4]*nn.Tensor
		for i, t := range []*nn.Tensor{x, xn, ao, mo} {
			sl, err := t.Slice(a, b)
			if err != nil {
				return err
			}
			vs[i] = sl
		}
		xs, xns, aos, mos := vs[0], vs[1], vs[2], vs[3]
		if err := l.attn.O.Record(r, aos, attnOut[a/chunk], pb.Scratch); err != nil {
			return err
		}
		if err := n.RecordResidual(r, xs, aos, xs, l.inRes); err != nil {
			return err
		}
		if err := n.RecordRMSNorm(r, xns, xs, l.postNorm, eps); err != nil {
			return err
		}
		if err := l.mlp.Record(n, r, mos, xns, mb); err != nil {
			return err
		}
		if l.experts != nil {
			if err := l.experts.RecordRouter(r, eb, a, xns); err != nil {
				return err
			}
		}
	}
	if l.experts != nil {
		if err := l.experts.RecordRoute(n, r, eb, T); err != nil {
			return err
		}
		if err := l.experts.RecordApply(n, r, eb, 0, mo, xn); err != nil {
			return err
		}
	}
	return n.RecordResidual(r, x, mo, x, l.postRes)
}
