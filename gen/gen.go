// Package gen generates tokens from a language model: prefill each prompt, then decode
// all sequences together one token per step, choosing each token greedily or by
// sampling (temperature, top-k, top-p, repetition penalty, as HF transformers' generate
// does), until a stop token or the length limit.
package gen

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Model is what Generate drives (doge.State is one): sequences are slots 0, 1, ....
type Model interface {
	// Prefill runs the prompt after what sequence seq holds (nothing: it starts the
	// sequence) and returns the last position's logits.
	Prefill(ctx context.Context, seq int, tokens []int) ([]float32, error)
	// Step appends tokens[i] to sequence seqs[i] and returns each new position's logits
	// ([len(seqs)*Vocab()]).
	Step(ctx context.Context, seqs, tokens []int) ([]float32, error)
	Vocab() int
}

// Options choose how tokens are picked. The zero value is greedy decoding of up to 16
// tokens.
type Options struct {
	MaxTokens int // tokens to generate per sequence (0: 16)
	// Temperature 0 is greedy (argmax, the first of equal logits); above 0, tokens are
	// sampled from softmax(logits / Temperature) after TopK and TopP.
	Temperature float64
	TopK        int     // keep the TopK most likely tokens (0: all)
	TopP        float64 // keep the most likely tokens whose probabilities reach TopP (0 or 1: all)
	// RepetitionPenalty > 1 discourages tokens already in the sequence (prompt
	// included): positive logits are divided by it, negative ones multiplied (0 or 1: off).
	RepetitionPenalty float64
	Stop              []int  // tokens that end a sequence (included in its output)
	Seed              uint64 // of the sampler
}

// Result is what Generate made.
type Result struct {
	Tokens       [][]int // each sequence's generated tokens
	PromptTokens int
	Generated    int
	Prefill      time.Duration // wall time of the prompts' prefill
	Decode       time.Duration // wall time of the decode steps
}

// PrefillRate and DecodeRate are tokens per second.
func (r *Result) PrefillRate() float64 { return rate(r.PromptTokens, r.Prefill) }
func (r *Result) DecodeRate() float64 {
	// The first token of each sequence comes from the prefill's logits.
	return rate(r.Generated-len(r.Tokens), r.Decode)
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate continues each prompt (sequence i in slot i of m). emit, if not nil, gets
// every token as it is chosen; an error from it stops generation. With a model whose
// Prefill continues a sequence (doge.State), a second Generate is a conversation's next
// turn: the sequences keep the first call's tokens but the last one chosen, which was
// never fed back, so each new prompt starts with it (res.Tokens[i]'s last).
func Generate(ctx context.Context, m Model, prompts [][]int, opt Options, emit func(seq, token int) error) (*Result, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		return nil, fmt.Errorf("gen: no prompts")
	}
	maxTok := opt.MaxTokens
	if maxTok == 0 {
		maxTok = 16
	}
	s := newSampler(opt, m.Vocab())
	res := &Result{Tokens: make([][]int, len(prompts))}
	seen := make([]map[int]bool, len(prompts))
	var active []int
	next := make([]int, len(prompts))
	// take records tok for seq and reports whether the sequence ends there.
	take := func(seq, tok int) (bool, error) {
		res.Tokens[seq] = append(res.Tokens[seq], tok)
		res.Generated++
		seen[seq][tok] = true
		if emit != nil {
			if err := emit(seq, tok); err != nil {
				return true, err
			}
		}
		for _, st := range opt.Stop {
			if tok == st {
				return true, nil
			}
		}
		return len(res.Tokens[seq]) >= maxTok, nil
	}
	start := time.Now()
	for i, p := range prompts {
		if len(p) == 0 {
			return res, fmt.Errorf("gen: prompt %d is empty", i)
		}
		logits, err := m.Prefill(ctx, i, p)
		if err != nil {
			return res, err
		}
		res.PromptTokens += len(p)
		seen[i] = map[int]bool{}
		for _, t := range p {
			seen[i][t] = true
		}
		tok := s.pick(logits, seen[i])
		stop, err := take(i, tok)
		if err != nil {
			return res, err
		}
		if !stop {
			active = append(active, i)
			next[i] = tok
		}
	}
	res.Prefill = time.Since(start)
	start = time.Now()
	defer func() { res.Decode = time.Since(start) }()
	v := m.Vocab()
	for len(active) > 0 {
		toks := make([]int, len(active))
		for j, seq := range active {
			toks[j] = next[seq]
		}
		logits, err := m.Step(ctx, active, toks)
		if err != nil {
			return res, err
		}
		var still []int
		for j, seq := range active {
			tok := s.pick(logits[j*v:(j+1)*v], seen[seq])
			stop, err := take(seq, tok)
			if err != nil {
				return res, err
			}
			if !stop {
				still = append(still, seq)
				next[seq] = tok
			}
		}
		active = still
	}
	return res, nil
}

func (o *Options) check() error {
	switch {
	case o.MaxTokens < 0:
		return fmt.Errorf("gen: MaxTokens %d is negative", o.MaxTokens)
	case !(o.Temperature >= 0) || math.IsInf(o.Temperature, 0):
		return fmt.Errorf("gen: Temperature %v must be finite and >= 0", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("gen: TopK %d is negative", o.TopK)
	case !(o.TopP >= 0 && o.TopP <= 1):
		return fmt.Errorf("gen: TopP %v outside [0, 1]", o.TopP)
	case !(o.RepetitionPenalty >= 0) || math.IsInf(o.RepetitionPenalty, 0):
		return fmt.Errorf("gen: RepetitionPenalty %v must be finite and >= 0", o.RepetitionPenalty)
	}
	return nil
}

// sampler picks tokens from logits.
type sampler struct {
	opt Options
	rng *rand.Rand
	buf []float64
	idx []int
}

func newSampler(opt Options, vocab int) *sampler {
	return &sampler{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15)), buf: make([]float64, vocab), idx: make([]int, vocab)}
}

// Pick applies the options to logits of a sequence that holds the tokens seen and
// returns the chosen token. It does not change logits.
func Pick(logits []float32, seen map[int]bool, opt Options, rng *rand.Rand) int {
	s := &sampler{opt: opt, rng: rng, buf: make([]float64, len(logits)), idx: make([]int, len(logits))}
	return s.pick(logits, seen)
}

func (s *sampler) pick(logits []float32, seen map[int]bool) int {
	x := s.buf[:len(logits)]
	for i, l := range logits {
		x[i] = float64(l)
	}
	if p := s.opt.RepetitionPenalty; p > 0 && p != 1 {
		for t := range seen {
			if t >= 0 && t < len(x) {
				if x[t] < 0 {
					x[t] *= p
				} else {
					x[t] /= p
				}
			}
		}
	}
	if s.opt.Temperature == 0 {
		best := 0
		for i, v := range x {
			if v > x[best] {
				best = i
			}
		}
		return best
	}
	for i := range x {
		x[i] /= s.opt.Temperature
	}
	idx := s.idx[:len(x)]
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] > x[idx[b]] })
	keep := len(idx)
	if k := s.opt.TopK; k > 0 && k < keep {
		// Ties with the k-th logit stay, as transformers' TopKLogitsWarper keeps them.
		kth := x[idx[k-1]]
		keep = k
		for keep < len(idx) && x[idx[keep]] == kth {
			keep++
		}
	}
	m := x[idx[0]]
	probs := make([]float64, keep)
	sum := 0.0
	for i := 0; i < keep; i++ {
		probs[i] = math.Exp(x[idx[i]] - m)
		sum += probs[i]
	}
	if p := s.opt.TopP; p > 0 && p < 1 {
		// The smallest prefix whose probability reaches p (at least one token).
		c := 0.0
		n := 0
		for n < keep {
			c += probs[n] / sum
			n++
			if c >= p {
				break
			}
		}
		keep = n
		sum = 0
		for i := 0; i < keep; i++ {
			sum += probs[i]
		}
	}
	u := s.rng.Float64() * sum
	for i := 0; i < keep; i++ {
		u -= probs[i]
		if u < 0 {
			return idx[i]
		}
	}
	return idx[keep-1]
}
