package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dmavk/dmavk/checkpoint"
	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/doge"
	"github.com/dmavk/dmavk/gen"
	"github.com/dmavk/dmavk/nn"
)

func init() {
	register(&command{
		name:  "generate",
		short: "generate text with a Doge model (a Hugging Face model directory), or time one (--bench)",
		usage: "--model DIR --prompt TEXT [flags] | --random 160m --bench [flags]",
		run:   runGenerate,
	})
}

type generateFlags struct {
	model, random, dtype, save, prompt, promptIDs, contexts string
	maxTokens, topK, batch, steps, chunk                    int
	temperature, topP, repetition                           float64
	seed                                                    uint64
	half, greedy, bench, asJSON                             bool
}

func runGenerate(args []string, stdout io.Writer) error {
	c := commands["generate"]
	fs := newFlagSet(c, stdout)
	var f generateFlags
	fs.StringVar(&f.model, "model", "", "model directory: config.json, model.safetensors (or shards), tokenizer.json")
	fs.StringVar(&f.random, "random", "", "a model with random weights instead: 160m (Doge-160M's shape) or small")
	fs.StringVar(&f.dtype, "dtype", "float16", "with --random: the weights' dtype (float16, bfloat16, float32)")
	fs.StringVar(&f.save, "save", "", "with --random: write the checkpoint there (and keep it), e.g. for bench/peers/doge.py")
	fs.StringVar(&f.prompt, "prompt", "", "the prompt text (needs the model's tokenizer.json)")
	fs.StringVar(&f.promptIDs, "prompt-ids", "", "the prompt as token ids, comma-separated")
	fs.IntVar(&f.maxTokens, "max-tokens", 0, "tokens to generate (0: the generation config's max_new_tokens, else 64)")
	fs.Float64Var(&f.temperature, "temperature", -1, "sampling temperature (0: greedy; default: the generation config's)")
	fs.IntVar(&f.topK, "top-k", -1, "keep the k most likely tokens (0: all; default: the generation config's)")
	fs.Float64Var(&f.topP, "top-p", -1, "keep the most likely tokens up to this probability (default: the generation config's)")
	fs.Float64Var(&f.repetition, "repetition-penalty", -1, "penalty on tokens already seen (1: off; default: the generation config's)")
	fs.BoolVar(&f.greedy, "greedy", false, "greedy decoding, whatever the generation config says")
	fs.Uint64Var(&f.seed, "seed", 0, "sampling seed (0: random)")
	fs.IntVar(&f.batch, "batch", 1, "generate this many continuations of the prompt at once (batched decode steps)")
	fs.BoolVar(&f.half, "half", false, "compute at a half-precision checkpoint's precision where faster (DMA and the KV cache in its dtype, tensor-core products)")
	fs.IntVar(&f.chunk, "chunk", 0, fmt.Sprintf("prefill the prompt this many tokens at a time (a multiple of 16; 0: %d)", doge.DefaultPrefillChunk))
	fs.BoolVar(&f.bench, "bench", false, "time prefill and decode at each --contexts length instead of generating text")
	fs.StringVar(&f.contexts, "contexts", "2K,32K", "with --bench: context lengths")
	fs.IntVar(&f.steps, "steps", 64, "with --bench: decode steps timed at each context")
	fs.BoolVar(&f.asJSON, "json", false, "with --bench: print JSON")
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if (f.model == "") == (f.random == "") {
		return usagef("give --model DIR or --random SHAPE")
	}
	if f.batch < 1 || f.steps < 1 {
		return usagef("--batch and --steps must be at least 1")
	}
	if f.chunk < 0 || f.chunk%16 != 0 {
		return usagef("--chunk %d: a positive multiple of 16 (or 0)", f.chunk)
	}
	dir := f.model
	if f.random != "" {
		shape, ok := dogeShapes[f.random]
		if !ok {
			return usagef("--random %q: 160m or small", f.random)
		}
		dir = f.save
		if dir == "" {
			tmp, err := os.MkdirTemp("", "dmavk-doge-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		fmt.Fprintf(os.Stderr, "generate: writing a random %s model (%s) to %s ...\n", f.random, f.dtype, dir)
		if err := writeRandomDoge(dir, shape, f.dtype, 1); err != nil {
			return err
		}
	}
	ctx := context.Background()
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return err
	}
	defer ck.Close()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		return err
	}
	defer dev.Close()
	n, err := nn.New(dev)
	if err != nil {
		return err
	}
	defer n.Close()
	t0 := time.Now()
	m, err := doge.New(ctx, n, ck, doge.Options{Half: f.half, PrefillChunk: f.chunk})
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(os.Stderr, "generate: %s on %s, loaded in %.1fs\n", dir, dev.Name(), time.Since(t0).Seconds())
	if f.bench {
		return benchDoge(ctx, m, dev, &f, stdout)
	}
	return generateText(ctx, m, ck, &f, stdout)
}

// generateText runs the prompt and streams the continuation.
func generateText(ctx context.Context, m *doge.Model, ck *checkpoint.Model, f *generateFlags, stdout io.Writer) error {
	var tok textCodec
	var prompt []int
	switch {
	case f.promptIDs != "" && f.prompt != "":
		return usagef("give --prompt or --prompt-ids, not both")
	case f.promptIDs != "":
		for _, s := range strings.Split(f.promptIDs, ",") {
			id, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return usagef("--prompt-ids: %v", err)
			}
			prompt = append(prompt, id)
		}
	case f.prompt != "":
		if ck.Tokenizer == "" {
			return fmt.Errorf("%s has no tokenizer.json: give --prompt-ids", ck.Dir)
		}
		var err error
		if tok, err = loadTokenizer(ck.Tokenizer); err != nil {
			return err
		}
		if prompt, err = tok.Encode(f.prompt); err != nil {
			return err
		}
	default:
		return usagef("give --prompt TEXT or --prompt-ids")
	}
	if len(prompt) == 0 {
		return fmt.Errorf("the prompt encodes to no tokens")
	}
	opt := genOptions(ck.Generation, f)
	st, err := m.NewState(f.batch, len(prompt)+opt.MaxTokens)
	if err != nil {
		return err
	}
	defer st.Close()
	prompts := make([][]int, f.batch)
	for i := range prompts {
		prompts[i] = prompt
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	streams := make([]func(int) string, f.batch)
	for i := range streams {
		if tok != nil {
			streams[i] = tok.Stream()
		}
	}
	// Each decode step's host and GPU time, read when its first sequence's token comes
	// (sequence 0 decodes as long as any does: the others stop no later).
	var host, gpu []float64
	res, err := gen.Generate(ctx, st, prompts, opt, func(seq, id int) error {
		if seq == 0 {
			if lt := st.LastStep(); lt.Submit > 0 && !lt.Recorded {
				host, gpu = append(host, lt.Host.Seconds()), append(gpu, lt.GPU.Seconds())
			}
		}
		if f.batch > 1 && seq > 0 {
			return nil // the first continuation is streamed; the others are printed after
		}
		if streams[seq] != nil {
			fmt.Fprint(w, streams[seq](id))
		} else {
			fmt.Fprintf(w, "%d ", id)
		}
		return w.Flush()
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(w)
	for i := 1; i < f.batch; i++ {
		fmt.Fprintf(w, "--- continuation %d:\n", i+1)
		for _, id := range res.Tokens[i] {
			if streams[i] != nil {
				fmt.Fprint(w, streams[i](id))
			} else {
				fmt.Fprintf(w, "%d ", id)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "prompt: %d tokens, %.1f tokens/s; generation: %d tokens, %.1f tokens/s\n",
		res.PromptTokens, res.PrefillRate(), res.Generated, res.DecodeRate())
	if len(host) > 0 {
		fmt.Fprintf(os.Stderr, "generate: a decode step (median of %d): host %.0f us, GPU %.3f ms\n", len(host), median(host)*1e6, median(gpu)*1e3)
	}
	return nil
}

// genOptions are the generation config's settings, overridden by the flags.
func genOptions(g checkpoint.GenerationConfig, f *generateFlags) gen.Options {
	opt := gen.Options{MaxTokens: f.maxTokens, Stop: g.EOSTokenIDs, Seed: f.seed, TopK: g.TopK, TopP: g.TopP, RepetitionPenalty: g.RepetitionPenalty}
	if g.DoSample {
		opt.Temperature = g.Temperature
	}
	if opt.MaxTokens == 0 {
		opt.MaxTokens = g.MaxNewTokens
	}
	if opt.MaxTokens == 0 {
		opt.MaxTokens = 64
	}
	if f.temperature >= 0 {
		opt.Temperature = f.temperature
	}
	if f.topK >= 0 {
		opt.TopK = f.topK
	}
	if f.topP >= 0 {
		opt.TopP = f.topP
	}
	if f.repetition >= 0 {
		opt.RepetitionPenalty = f.repetition
	}
	if f.greedy {
		opt.Temperature = 0
	}
	if opt.Seed == 0 {
		opt.Seed = rand.Uint64()
	}
	return opt
}

// benchRow is one context length's figures.
type dogeBenchRow struct {
	Device         string  `json:"device"`
	Context        int     `json:"context"`
	PrefillMS      float64 `json:"prefill_ms"`
	PrefillTokensS float64 `json:"prefill_tokens_per_s"`
	DecodeStepMS   float64 `json:"decode_step_ms"` // median wall time of a step
	DecodeTokensS  float64 `json:"decode_tokens_per_s"`
	HostUS         float64 `json:"decode_host_us"` // median host work of a step
	HostShare      float64 `json:"decode_host_share"`
	SubmitMS       float64 `json:"decode_submit_ms"` // median submission-to-done of a step
	GPUMS          float64 `json:"decode_gpu_ms"`    // median GPU time of a step (timestamps)
	PeakMiB        float64 `json:"peak_device_mib"`  // the most device memory dmavk's buffers held (weights included)
	Chunk          int     `json:"prefill_chunk"`
	Steps          int     `json:"steps"`
	Half           bool    `json:"half"`
	WeightsDType   string  `json:"weights_dtype"`
	AttentionDType string  `json:"attention_dtype"`
	KeepWindowSize int     `json:"keep_window_size"`
	Layers         int     `json:"layers"`
	Hidden         int     `json:"hidden"`
}

// benchDoge times, at each context length: the prefill of that many random tokens (one
// sequence; once untimed, then the median of three), then --steps decode steps after it (each one token, every layer in one
// submission).
func benchDoge(ctx context.Context, m *doge.Model, dev *dma.Device, f *generateFlags, stdout io.Writer) error {
	device := dev.Name()
	var lengths []int
	for _, s := range strings.Split(f.contexts, ",") {
		s = strings.TrimSpace(s)
		mul := 1
		if strings.HasSuffix(s, "K") || strings.HasSuffix(s, "k") {
			mul, s = 1024, s[:len(s)-1]
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			return usagef("--contexts %q: lengths like 2K,32K", f.contexts)
		}
		lengths = append(lengths, v*mul)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	tokens := func(n int) []int {
		t := make([]int, n)
		for i := range t {
			t[i] = rng.IntN(m.Cfg.VocabSize)
		}
		return t
	}
	// Warm-up: every kernel built once, the clocks up.
	warm, err := m.NewState(1, 512)
	if err != nil {
		return err
	}
	if _, err := warm.Prefill(ctx, 0, tokens(256)); err != nil {
		warm.Close()
		return err
	}
	for i := 0; i < 8; i++ {
		if _, err := warm.Step(ctx, []int{0}, tokens(1)); err != nil {
			warm.Close()
			return err
		}
	}
	warm.Close()
	var rows []dogeBenchRow
	for _, L := range lengths {
		fmt.Fprintf(os.Stderr, "generate: bench at context %d ...\n", L)
		dev.VK().ResetPeakMemory()
		prompt := tokens(L)
		// The prefill: once untimed (the kernels of this length built, the clocks up),
		// then the median of three, each into a fresh state; the last one is decoded on.
		var st *doge.State
		var logits []float32
		var times []float64
		for i := 0; i < 4; i++ {
			if st != nil {
				st.Close()
			}
			if st, err = m.NewState(1, L+f.steps+1); err != nil {
				return err
			}
			t0 := time.Now()
			if logits, err = st.Prefill(ctx, 0, prompt); err != nil {
				st.Close()
				return err
			}
			if i > 0 {
				times = append(times, time.Since(t0).Seconds())
			}
		}
		prefill := time.Duration(median(times) * float64(time.Second))
		next := argmaxOf(logits)
		var wall, host, submit, gpu []float64
		for i := 0; i < f.steps; i++ {
			t := time.Now()
			logits, err = st.Step(ctx, []int{0}, []int{next})
			if err != nil {
				st.Close()
				return err
			}
			d := time.Since(t)
			next = argmaxOf(logits)
			lt := st.LastStep()
			if lt.Recorded {
				continue // a recording, not a step: not timed
			}
			wall = append(wall, d.Seconds())
			host = append(host, lt.Host.Seconds())
			submit = append(submit, lt.Submit.Seconds())
			gpu = append(gpu, lt.GPU.Seconds())
		}
		st.Close()
		peak := dev.VK().Memory().Peak
		if len(wall) == 0 {
			return fmt.Errorf("every step recorded its program: give more --steps")
		}
		w, h := median(wall), median(host)
		rows = append(rows, dogeBenchRow{
			Device: device, Context: L, PrefillMS: prefill.Seconds() * 1e3, PrefillTokensS: float64(L) / prefill.Seconds(),
			DecodeStepMS: w * 1e3, DecodeTokensS: 1 / w, HostUS: h * 1e6, HostShare: h / w, SubmitMS: median(submit) * 1e3, GPUMS: median(gpu) * 1e3,
			PeakMiB: float64(peak) / (1 << 20), Steps: len(wall), Half: f.half, Chunk: m.PrefillChunk(), WeightsDType: m.Cfg.DType, AttentionDType: m.DType.String(),
			KeepWindowSize: m.Cfg.KeepWindowSize, Layers: m.Cfg.NumHiddenLayers, Hidden: m.Cfg.HiddenSize,
		})
	}
	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	fmt.Fprintf(stdout, "%s, Doge %d layers x %d, weights %s, attention %s, keep_window_size %d\n", device, m.Cfg.NumHiddenLayers, m.Cfg.HiddenSize, m.Cfg.DType, m.DType, m.Cfg.KeepWindowSize)
	fmt.Fprintln(stdout, "| context | prefill ms | prefill tok/s | decode step ms | decode tok/s | GPU ms/step | host us/step | host share | peak MiB |")
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(stdout, "| %d | %.1f | %.0f | %.3f | %.1f | %.3f | %.0f | %.1f%% | %.0f |\n", r.Context, r.PrefillMS, r.PrefillTokensS, r.DecodeStepMS, r.DecodeTokensS, r.GPUMS, r.HostUS, 100*r.HostShare, r.PeakMiB)
	}
	return nil
}

func argmaxOf(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
