// Package doge runs SmallDoge's Doge models (HF transformers' DogeForCausalLM) on any
// Vulkan device: the layers of package nn, DMA attention over dma's KV caches, built from
// a checkpoint's config.json and tensors. It computes what transformers'
// modeling_doge.py computes: q/k RMSNorm per head before RoPE (with the config's rope
// scaling), the dynamic weights exp(A * softplus(dt_proj(V))) over the values of all kv
// heads, the top keep_window_size keys of each query's causal prefix, the residual gates
// input_residual and post_attention_residual, DogeMLP or DogeCDMoE (is_moe), and tied or
// untied embeddings.
package doge

import (
	"encoding/json"
	"fmt"
	"math"
)

// Config is what the model reads of a Doge config.json (DogeConfig's fields).
type Config struct {
	ModelType             string   `json:"model_type"`
	Architectures         []string `json:"architectures"`
	VocabSize             int      `json:"vocab_size"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	HeadDim               int      `json:"head_dim"`
	HiddenAct             string   `json:"hidden_act"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	RopeTheta             float64  `json:"rope_theta"`
	// RopeParameters is transformers 5's rope_parameters (rope_type, rope_theta,
	// factor...); RopeScaling the older rope_scaling. Either may be absent.
	RopeParameters map[string]any `json:"rope_parameters"`
	RopeScaling    map[string]any `json:"rope_scaling"`
	AttentionBias  bool           `json:"attention_bias"`
	MLPBias        bool           `json:"mlp_bias"`
	SlidingWindow  *int           `json:"sliding_window"`
	KeepWindowSize int            `json:"keep_window_size"`
	IsMoE          bool           `json:"is_moe"`
	NumExperts     int            `json:"num_experts"`
	ExpertsPerTok  int            `json:"num_experts_per_tok"`
	NormTopKProb   bool           `json:"norm_topk_prob"`
	BosTokenID     *int           `json:"bos_token_id"`
	EosTokenID     any            `json:"eos_token_id"` // an id or a list
	PadTokenID     *int           `json:"pad_token_id"`
	TorchDType     string         `json:"torch_dtype"`
	DType          string         `json:"dtype"`
}

// ParseConfig reads a config.json with DogeConfig's defaults for absent fields.
func ParseConfig(data []byte) (*Config, error) {
	c := &Config{
		VocabSize: 32768, HiddenSize: 1024, IntermediateSize: 2048, NumHiddenLayers: 32,
		HiddenAct: "silu", RMSNormEps: 1e-6, MaxPositionEmbeddings: 2048, NumAttentionHeads: 8,
		KeepWindowSize: 2048, NumExperts: 16384, ExpertsPerTok: 64, RopeTheta: 10000,
	}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("doge: config.json: %w", err)
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == 0 && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	return c, c.Check()
}

// Check reports a configuration this package cannot run, naming the field.
func (c *Config) Check() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("doge: config: "+format, a...) }
	if c.ModelType != "" && c.ModelType != "doge" {
		return bad("model_type %q is not doge", c.ModelType)
	}
	for _, a := range c.Architectures {
		if a != "DogeForCausalLM" {
			return bad("architecture %q is not DogeForCausalLM", a)
		}
	}
	switch {
	case c.VocabSize < 1, c.HiddenSize < 1, c.IntermediateSize < 1, c.NumHiddenLayers < 1:
		return bad("vocab_size %d, hidden_size %d, intermediate_size %d, num_hidden_layers %d must be positive", c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers)
	case c.NumAttentionHeads < 1 || c.NumKeyValueHeads < 1 || c.NumAttentionHeads%c.NumKeyValueHeads != 0:
		return bad("num_attention_heads %d must be a positive multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	case c.HeadDim%8 != 0 || c.HeadDim < 8 || c.HeadDim > 256:
		return bad("head_dim %d: DMA takes multiples of 8 up to 256", c.HeadDim)
	case c.HiddenSize%4 != 0:
		return bad("hidden_size %d must be a multiple of 4", c.HiddenSize)
	case c.HiddenAct != "silu":
		return bad("hidden_act %q: only silu is supported", c.HiddenAct)
	case c.SlidingWindow != nil:
		return bad("sliding_window %d is not supported", *c.SlidingWindow)
	case c.KeepWindowSize < 1:
		return bad("keep_window_size %d must be positive", c.KeepWindowSize)
	case !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0):
		return bad("rms_norm_eps %v", c.RMSNormEps)
	}
	if c.IsMoE {
		keys := int(math.Sqrt(float64(c.NumExperts)))
		if c.NumExperts < 1 || keys > 256 || c.ExpertsPerTok < 1 || c.ExpertsPerTok > 256 || c.ExpertsPerTok > keys*keys {
			return bad("num_experts %d (at most 65536) and num_experts_per_tok %d (1 to 256)", c.NumExperts, c.ExpertsPerTok)
		}
	}
	if _, err := c.RoPE(); err != nil {
		return err
	}
	return nil
}

// rope reads the rope settings: rope_parameters, else rope_scaling with rope_theta.
func (c *Config) RoPE() (*ropeSettings, error) {
	p := c.RopeParameters
	if p == nil {
		p = c.RopeScaling
	}
	s := &ropeSettings{Type: "default", Theta: c.RopeTheta}
	if p != nil {
		num := func(k string) float64 {
			if v, ok := p[k].(float64); ok {
				return v
			}
			return 0
		}
		if t, ok := p["rope_type"].(string); ok {
			s.Type = t
		} else if t, ok := p["type"].(string); ok {
			s.Type = t
		}
		if th := num("rope_theta"); th != 0 {
			s.Theta = th
		}
		s.Factor, s.OrigMax = num("factor"), int(num("original_max_position_embeddings"))
		s.BetaFast, s.BetaSlow, s.AttnFactor = num("beta_fast"), num("beta_slow"), num("attention_factor")
		if f := num("partial_rotary_factor"); f != 0 && f != 1 {
			return nil, fmt.Errorf("doge: config: partial_rotary_factor %v is not supported", f)
		}
		if tr, ok := p["truncate"].(bool); ok {
			s.Truncate = &tr
		}
	}
	switch s.Type {
	case "default", "linear", "dynamic", "yarn":
	default:
		return nil, fmt.Errorf("doge: config: rope_type %q is not supported (default, linear, dynamic, yarn)", s.Type)
	}
	return s, nil
}

type ropeSettings struct {
	Type                           string
	Theta, Factor                  float64
	OrigMax                        int
	BetaFast, BetaSlow, AttnFactor float64
	Truncate                       *bool
}

// EOS are the end-of-sequence ids.
func (c *Config) EOS() []int {
	switch v := c.EosTokenID.(type) {
	case float64:
		return []int{int(v)}
	case []any:
		var out []int
		for _, x := range v {
			if f, ok := x.(float64); ok {
				out = append(out, int(f))
			}
		}
		return out
	}
	return nil
}
