package doge

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
	"github.com/dmavk/dmavk/vk"
)

// maxDecodePrograms bounds the recorded steps a State keeps (one per set of sequences
// stepped together).
const maxDecodePrograms = 8

// decodeProgram is the recorded decode step of one set of sequences: every layer in one
// submission. Its per-step inputs (token ids, RoPE rows) and output (logits) live in
// host-visible memory.
type decodeProgram struct {
	seqs             []int
	ids, cs, logitsH *nn.Tensor // host-visible: written, written, read by the host
	x, xn, ao, mo, o *nn.Tensor
	logits, headTmp  *nn.Tensor
	pb               *nn.ProjectBuffers
	mb               *nn.MLPBuffers
	eb               *nn.ExpertBuffers
	q, k, v          []*dma.Tensor
	w                []*dma.Weights
	out              []*dma.Result
	steps            [][]*dma.RecordedStep // [layer][sequence]
	phases           []dma.StepPhase       // of the recording
	prog             *vk.Program
	// A step's scratch, kept from step to step: the phases it prepares, the steps
	// prepared.
	nextPhases []dma.StepPhase
	prepared   []*dma.RecordedStep
	free       closer
}

func (p *decodeProgram) close() {
	if p.prog != nil {
		p.prog.Close()
	}
	for _, l := range p.steps {
		for _, s := range l {
			s.Close()
		}
	}
	p.free.close()
}

func (s *State) newDecodeProgram(seqs []int) (*decodeProgram, error) {
	m, n, d := s.m, s.m.n, s.m.n.DMA()
	c := m.Cfg
	B := len(seqs)
	p := &decodeProgram{seqs: append([]int(nil), seqs...)}
	fail := func(err error) (*decodeProgram, error) {
		p.close()
		return nil, err
	}
	f32 := dma.Float32
	for _, b := range []struct {
		dst        **nn.Tensor
		dt         dma.DType
		rows, cols int
		host       int // 1: written by the host, 2: read by the host
	}{
		{&p.ids, f32, B, 1, 1}, {&p.cs, f32, B, c.HeadDim, 1}, {&p.logitsH, f32, B, c.VocabSize, 2},
		{&p.x, f32, B, c.HiddenSize, 0}, {&p.xn, f32, B, c.HiddenSize, 0}, {&p.ao, f32, B, c.HiddenSize, 0},
		{&p.mo, f32, B, c.HiddenSize, 0}, {&p.o, m.DType, B, c.NumAttentionHeads * c.HeadDim, 0},
		{&p.logits, f32, B, c.VocabSize, 0}, {&p.headTmp, f32, 1, max(1, m.lmHead.ScratchElems(B)), 0},
	} {
		var t *nn.Tensor
		var err error
		switch b.host {
		case 1:
			t, err = n.NewMappedTensor(b.dt, b.rows, b.cols)
		case 2:
			t, err = n.NewReadbackTensor(b.dt, b.rows, b.cols)
		default:
			t, err = n.NewTensor(b.dt, b.rows, b.cols)
		}
		if err != nil {
			return fail(err)
		}
		*b.dst = t
		p.free.add(t)
	}
	l0 := m.layers[0]
	var err error
	if p.pb, err = l0.attn.NewProjectBuffers(n, B); err != nil {
		return fail(err)
	}
	p.free.add(p.pb)
	if p.mb, err = l0.mlp.NewBuffers(n, B); err != nil {
		return fail(err)
	}
	p.free.add(p.mb)
	if l0.experts != nil {
		if p.eb, err = l0.experts.NewBuffers(n, B); err != nil {
			return fail(err)
		}
		p.free.add(p.eb)
	}
	for range seqs {
		q, err := d.NewTensor(m.DType, dma.Shape{B: 1, L: 1, H: c.NumAttentionHeads, D: c.HeadDim}, dma.BLHD)
		if err != nil {
			return fail(err)
		}
		p.free.add(q)
		p.q = append(p.q, q)
		for _, dst := range []*[]*dma.Tensor{&p.k, &p.v} {
			t, err := d.NewTensor(m.DType, dma.Shape{B: 1, L: 1, H: c.NumKeyValueHeads, D: c.HeadDim}, dma.BLHD)
			if err != nil {
				return fail(err)
			}
			p.free.add(t)
			*dst = append(*dst, t)
		}
		w, err := d.NewWeights(1, c.NumKeyValueHeads, 1)
		if err != nil {
			return fail(err)
		}
		p.free.add(w)
		p.w = append(p.w, w)
		out, err := s.caches[0].NewResult(q)
		if err != nil {
			return fail(err)
		}
		p.free.add(out)
		p.out = append(p.out, out)
	}
	for li, l := range m.layers {
		var row []*dma.RecordedStep
		for i, seq := range seqs {
			st, err := s.caches[li].NewRecordedStep(seq, p.k[i], p.v[i], p.w[i], p.q[i], p.out[i], l.attn.Options())
			if err != nil {
				return fail(err)
			}
			row = append(row, st)
		}
		p.steps = append(p.steps, row)
	}
	return p, nil
}

// record records the whole step.
func (s *State) recordDecode(r *vk.Recorder, p *decodeProgram) error {
	m, n := s.m, s.m.n
	eps := float32(m.Cfg.RMSNormEps)
	B := len(p.seqs)
	// The step's GPU time: from before its first command to after its last (nothing on
	// devices without timestamps).
	if err := r.Timestamp("start"); err != nil {
		return err
	}
	if err := m.embed.Record(n, r, p.x, p.ids); err != nil {
		return err
	}
	// Each gated residual is fused with the norm after it (the next layer's input norm,
	// or the final norm).
	if err := n.RecordRMSNorm(r, p.xn, p.x, m.layers[0].inNorm, eps); err != nil {
		return err
	}
	for li, l := range m.layers {
		if err := l.attn.RecordProject(r, p.pb, p.xn); err != nil {
			return err
		}
		for i := 0; i < B; i++ {
			q, _ := nn.ViewOf(p.q[i])
			k, _ := nn.ViewOf(p.k[i])
			v, _ := nn.ViewOf(p.v[i])
			cs, err := p.cs.Slice(i, i+1)
			if err != nil {
				return err
			}
			if err := l.attn.RecordQKV(n, r, p.pb, i, 1, q, k, v, p.w[i], 0, cs); err != nil {
				return err
			}
		}
		for i := 0; i < B; i++ {
			if err := p.steps[li][i].Record(r); err != nil {
				return err
			}
		}
		// The sequences' outputs side by side for the output projection (one sequence:
		// its output itself).
		o, _ := nn.ViewOf(p.out[0].O)
		if B > 1 {
			o = p.o
			for i := 0; i < B; i++ {
				src, _ := nn.ViewOf(p.out[i].O)
				dst, err := p.o.Slice(i, i+1)
				if err != nil {
					return err
				}
				if err := r.Copy(src.Buffer(), src.Offset(), dst.Buffer(), dst.Offset(), int64(dst.Cols*dst.DType.Size())); err != nil {
					return err
				}
			}
			r.Barrier()
		}
		if l.attn.O.FusesResidual(B) {
			if err := l.attn.O.RecordResidualNorm(r, p.x, o, l.inRes, p.xn, l.postNorm, eps, p.pb.Scratch); err != nil {
				return err
			}
		} else {
			if err := l.attn.O.Record(r, p.ao, o, p.pb.Scratch); err != nil {
				return err
			}
			if err := n.RecordResidualNorm(r, p.x, p.ao, l.inRes, p.xn, l.postNorm, eps); err != nil {
				return err
			}
		}
		next := m.norm
		if li+1 < len(m.layers) {
			next = m.layers[li+1].inNorm
		}
		if l.experts == nil && l.mlp.FusesResidual(B) {
			if err := l.mlp.RecordResidualNorm(n, r, p.x, p.xn, l.postRes, p.xn, next, eps, p.mb); err != nil {
				return err
			}
			continue
		}
		if err := l.mlp.Record(n, r, p.mo, p.xn, p.mb); err != nil {
			return err
		}
		if l.experts != nil {
			if err := l.experts.RecordRouter(r, p.eb, 0, p.xn); err != nil {
				return err
			}
			if err := l.experts.RecordRoute(n, r, p.eb, B); err != nil {
				return err
			}
			if err := l.experts.RecordApply(n, r, p.eb, 0, p.mo, p.xn); err != nil {
				return err
			}
		}
		if err := n.RecordResidualNorm(r, p.x, p.mo, l.postRes, p.xn, next, eps); err != nil {
			return err
		}
	}
	if err := m.lmHead.Record(r, p.logits, p.xn, p.headTmp); err != nil {
		return err
	}
	if err := nn.RecordCopy(r, p.logitsH, p.logits); err != nil {
		return err
	}
	return r.Timestamp("end")
}

// Step appends tokens[i] to sequence seqs[i] (each already started by Prefill, each
// listed once) and returns the logits of each new position ([len(seqs)*vocab]): every
// layer of every sequence in one submission. Transformers' CDMoE routes the tokens of
// one forward pass together; a Step is one such pass over len(seqs) tokens.
func (s *State) Step(ctx context.Context, seqs, tokens []int) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	var submitted, waited time.Time
	defer func() {
		if !waited.IsZero() {
			s.last.Host = submitted.Sub(start) + time.Since(waited)
			s.last.Submit = waited.Sub(submitted)
		}
	}()
	fail := func(err error) ([]float32, error) { return nil, fmt.Errorf("doge: Step: %w", err) }
	if s.closed {
		return fail(fmt.Errorf("the state is closed"))
	}
	if s.m.closed() {
		return fail(fmt.Errorf("the model is closed"))
	}
	if len(seqs) == 0 || len(seqs) != len(tokens) {
		return fail(fmt.Errorf("%d sequences for %d tokens", len(seqs), len(tokens)))
	}
	if err := s.checkTokens(tokens); err != nil {
		return fail(err)
	}
	pos := make([]int, len(seqs))
	maxPos := 0
	key := make([]byte, 0, 4*len(seqs)) // the recorded program's: "0,2,"
	for i, seq := range seqs {
		switch {
		case seq < 0 || seq >= s.Sequences:
			return fail(fmt.Errorf("sequence %d of %d", seq, s.Sequences))
		case slices.Contains(seqs[:i], seq):
			return fail(fmt.Errorf("sequence %d listed twice", seq))
		case s.lens[seq] == 0:
			return fail(fmt.Errorf("sequence %d is empty: start it with Prefill", seq))
		case s.lens[seq] >= s.Capacity:
			return fail(fmt.Errorf("sequence %d is full (%d tokens)", seq, s.Capacity))
		}
		pos[i] = s.lens[seq]
		maxPos = max(maxPos, pos[i])
		key = append(strconv.AppendInt(key, int64(seq), 10), ',')
	}
	p, ok := s.steps[string(key)]
	if !ok {
		if len(s.steps) >= maxDecodePrograms {
			for k, old := range s.steps {
				old.close()
				delete(s.steps, k)
			}
		}
		var err error
		if p, err = s.newDecodeProgram(seqs); err != nil {
			return fail(err)
		}
		s.steps[string(key)] = p
	}
	if err := p.ids.UploadIDs(ctx, tokens); err != nil {
		return fail(err)
	}
	if err := p.cs.Upload(ctx, s.rope.Table(pos, maxPos)); err != nil {
		return fail(err)
	}
	phases := p.nextPhases[:0]
	prepared := p.prepared[:0]
	defer func() { p.nextPhases, p.prepared = phases[:0], prepared[:0] }()
	commit := func(err error) {
		for _, st := range prepared {
			st.Commit(err)
		}
	}
	for _, row := range p.steps {
		for _, st := range row {
			ph, err := st.Prepare(ctx)
			if err != nil {
				commit(err)
				return fail(err)
			}
			prepared = append(prepared, st)
			phases = append(phases, ph)
		}
	}
	same := p.prog != nil && len(phases) == len(p.phases)
	for i := 0; same && i < len(phases); i++ {
		same = phases[i] == p.phases[i]
	}
	var err error
	if !same {
		if p.prog != nil {
			p.prog.Close()
			p.prog = nil
		}
		p.prog, err = s.m.n.DMA().VK().Record(func(r *vk.Recorder) error { return s.recordDecode(r, p) })
		if err != nil {
			p.prog = nil
			commit(err)
			return fail(err)
		}
		p.phases = append(p.phases[:0], phases...)
	}
	s.last.Recorded = !same
	submitted = time.Now()
	ts, err := p.prog.SubmitTimed(ctx)
	waited = time.Now()
	commit(err)
	if err != nil {
		return fail(err)
	}
	s.last.GPU = 0
	if len(ts) == 2 {
		s.last.GPU = time.Duration(ts[1].Nanos - ts[0].Nanos)
	}
	for _, seq := range seqs {
		s.lens[seq]++
	}
	logits := make([]float32, len(seqs)*s.m.Cfg.VocabSize)
	if err := p.logitsH.DownloadInto(ctx, logits); err != nil {
		return fail(err)
	}
	return logits, nil
}

// StepTiming is where the wall time of a Step went.
type StepTiming struct {
	// Host is the host's own work: checks, the parameters of every layer's attention
	// step, writing the inputs, reading the logits (and recording, when Recorded).
	Host time.Duration
	// Submit is from the submission to the end of the GPU's work: the GPU's time
	// plus the driver's submission and wake-up latency.
	Submit time.Duration
	// GPU is the step's time on the GPU, between timestamps before its first command and
	// after its last (0 on devices without timestamps).
	GPU time.Duration
	// Recorded is set when the step recorded its program (the first step of a set of
	// sequences, or a change of phase): Host then includes the recording.
	Recorded bool
}

// LastStep is the timing of the last Step that reached the GPU.
func (s *State) LastStep() StepTiming {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}
