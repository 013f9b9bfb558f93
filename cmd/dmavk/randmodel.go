package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/dmavk/dmavk/internal/bf16"
	"github.com/dmavk/dmavk/internal/f16"
)

// dogeShape is the shape of a Doge model with random weights (benchmarks).
type dogeShape struct {
	Vocab, Hidden, Inter, Layers, Heads, KVHeads, HeadDim, Window, MaxPos int
}

// dogeShapes are the shapes --random knows: SmallDoge's Doge-160M (its recipe: hidden
// 768, intermediate 1536, 24 layers, 6 / 3 heads of 128, tied embeddings, dynamic RoPE
// with factor 4 over 2048 positions) and a small one for trying the command on a CPU.
var dogeShapes = map[string]dogeShape{
	"160m":  {Vocab: 32768, Hidden: 768, Inter: 1536, Layers: 24, Heads: 6, KVHeads: 3, HeadDim: 128, Window: 2048, MaxPos: 2048},
	"small": {Vocab: 2000, Hidden: 256, Inter: 512, Layers: 4, Heads: 4, KVHeads: 2, HeadDim: 64, Window: 64, MaxPos: 256},
}

// writeRandomDoge writes a DogeForCausalLM checkpoint with random weights into dir:
// config.json and model.safetensors, weights in dtype ("float16", "bfloat16",
// "float32"), drawn as transformers initializes them (normal, std 0.02; norms and
// residual gates 1) except A, non-zero so that the dynamic weights vary.
func writeRandomDoge(dir string, s dogeShape, dtype string, seed uint64) error {
	st := map[string]string{"float16": "F16", "bfloat16": "BF16", "float32": "F32"}[dtype]
	if st == "" {
		return fmt.Errorf("dtype %q: float16, bfloat16 or float32", dtype)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := map[string]any{
		"architectures": []string{"DogeForCausalLM"}, "model_type": "doge", "dtype": dtype,
		"vocab_size": s.Vocab, "hidden_size": s.Hidden, "intermediate_size": s.Inter, "num_hidden_layers": s.Layers,
		"num_attention_heads": s.Heads, "num_key_value_heads": s.KVHeads, "head_dim": s.HeadDim,
		"hidden_act": "silu", "rms_norm_eps": 1e-6, "max_position_embeddings": s.MaxPos, "keep_window_size": s.Window,
		"rope_parameters":     map[string]any{"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": s.MaxPos, "rope_theta": 10000.0},
		"tie_word_embeddings": true, "attention_bias": false, "mlp_bias": false, "is_moe": false,
		"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
	}
	raw, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 11))
	type tensor struct {
		name  string
		shape []int
		fill  func(i int) float64
	}
	normal := func(int) float64 { return 0.02 * rng.NormFloat64() }
	one := func(int) float64 { return 1 }
	signedA := func(int) float64 {
		a := 0.5 + rng.Float64()
		if rng.IntN(2) == 0 {
			a = -a
		}
		return a
	}
	hd := s.HeadDim
	ts := []tensor{{"model.embed_tokens.weight", []int{s.Vocab, s.Hidden}, normal}, {"model.norm.weight", []int{s.Hidden}, one}}
	for l := 0; l < s.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			tensor{p + "input_layernorm.weight", []int{s.Hidden}, one},
			tensor{p + "input_residual", []int{s.Hidden}, one},
			tensor{p + "post_attention_layernorm.weight", []int{s.Hidden}, one},
			tensor{p + "post_attention_residual", []int{s.Hidden}, one},
			tensor{p + "self_attn.q_proj.weight", []int{s.Heads * hd, s.Hidden}, normal},
			tensor{p + "self_attn.k_proj.weight", []int{s.KVHeads * hd, s.Hidden}, normal},
			tensor{p + "self_attn.v_proj.weight", []int{s.KVHeads * hd, s.Hidden}, normal},
			tensor{p + "self_attn.o_proj.weight", []int{s.Hidden, s.Heads * hd}, normal},
			tensor{p + "self_attn.dt_proj.weight", []int{s.KVHeads, s.KVHeads * hd}, normal},
			tensor{p + "self_attn.A", []int{s.KVHeads}, signedA},
			tensor{p + "self_attn.q_norm.weight", []int{hd}, one},
			tensor{p + "self_attn.k_norm.weight", []int{hd}, one},
			tensor{p + "mlp.gate_proj.weight", []int{s.Inter, s.Hidden}, normal},
			tensor{p + "mlp.up_proj.weight", []int{s.Inter, s.Hidden}, normal},
			tensor{p + "mlp.down_proj.weight", []int{s.Hidden, s.Inter}, normal},
		)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	es := map[string]int{"F16": 2, "BF16": 2, "F32": 4}[st]
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := 0
	for _, t := range ts {
		n := 1
		for _, d := range t.shape {
			n *= d
		}
		header[t.name] = map[string]any{"dtype": st, "shape": t.shape, "data_offsets": []int{off, off + n*es}}
		off += n * es
	}
	hj, _ := json.Marshal(header)
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return err
	}
	defer f.Close()
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hj)))
	if _, err := f.Write(append(lenBuf[:], hj...)); err != nil {
		return err
	}
	for _, t := range ts {
		n := 1
		for _, d := range t.shape {
			n *= d
		}
		buf := make([]byte, n*es)
		for i := 0; i < n; i++ {
			v := float32(t.fill(i))
			switch st {
			case "F16":
				binary.LittleEndian.PutUint16(buf[2*i:], f16.FromFloat32(v))
			case "BF16":
				binary.LittleEndian.PutUint16(buf[2*i:], bf16.FromFloat32(v))
			default:
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
		}
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Close()
}
