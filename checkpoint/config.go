package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// Architectures this package knows the tensors of.
var supportedArchitectures = []string{"DogeForCausalLM"}

// Config is a Doge config.json (transformers' DogeConfig), with DogeConfig's defaults for
// absent fields.
type Config struct {
	Architectures         []string
	ModelType             string
	VocabSize             int
	HiddenSize            int
	IntermediateSize      int
	NumHiddenLayers       int
	NumAttentionHeads     int
	NumKeyValueHeads      int // defaults to NumAttentionHeads
	HeadDim               int // defaults to HiddenSize / NumAttentionHeads
	HiddenAct             string
	RMSNormEps            float64
	MaxPositionEmbeddings int
	TieWordEmbeddings     bool
	AttentionBias         bool
	MLPBias               bool
	SlidingWindow         int // 0: none
	KeepWindowSize        int // keys kept per query by the dynamic mask
	IsMoE                 bool
	NumExperts            int
	NumExpertsPerTok      int
	NormTopKProb          bool
	RoPE                  RoPE
	BOSTokenID            int // -1 when absent
	PadTokenID            int // -1 when absent
	EOSTokenIDs           []int
	DType                 string // "dtype" (or older "torch_dtype"), e.g. "bfloat16"
}

// RoPE is the rotary embedding's settings: transformers 5's rope_parameters, or the older
// rope_scaling with a top-level rope_theta. Fields a type does not use are zero.
type RoPE struct {
	Type                          string // default, linear, dynamic, yarn, longrope, llama3
	Theta                         float64
	Factor                        float64
	OriginalMaxPositionEmbeddings int
	AttentionFactor               float64
	BetaFast, BetaSlow            float64
	LowFreqFactor, HighFreqFactor float64
	PartialRotaryFactor           float64 // 1 when absent
	ShortFactor, LongFactor       []float64
	Truncate                      *bool // yarn; nil when absent
}

var ropeTypes = map[string]bool{"default": true, "linear": true, "dynamic": true, "yarn": true, "longrope": true, "llama3": true}

// tokenIDs is an id, a list of ids, or null.
type tokenIDs []int

func (t *tokenIDs) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*t = nil
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		var ids []int
		if err := json.Unmarshal(b, &ids); err != nil {
			return err
		}
		*t = ids
		return nil
	}
	var id int
	if err := json.Unmarshal(b, &id); err != nil {
		return err
	}
	*t = tokenIDs{id}
	return nil
}

type ropeJSON struct {
	RopeType                      string    `json:"rope_type"`
	Type                          string    `json:"type"` // older spelling
	RopeTheta                     *float64  `json:"rope_theta"`
	Factor                        float64   `json:"factor"`
	OriginalMaxPositionEmbeddings int       `json:"original_max_position_embeddings"`
	AttentionFactor               float64   `json:"attention_factor"`
	BetaFast                      float64   `json:"beta_fast"`
	BetaSlow                      float64   `json:"beta_slow"`
	LowFreqFactor                 float64   `json:"low_freq_factor"`
	HighFreqFactor                float64   `json:"high_freq_factor"`
	PartialRotaryFactor           *float64  `json:"partial_rotary_factor"`
	ShortFactor                   []float64 `json:"short_factor"`
	LongFactor                    []float64 `json:"long_factor"`
	Truncate                      *bool     `json:"truncate"`
}

type configJSON struct {
	Architectures         []string  `json:"architectures"`
	ModelType             string    `json:"model_type"`
	VocabSize             *int      `json:"vocab_size"`
	HiddenSize            *int      `json:"hidden_size"`
	IntermediateSize      *int      `json:"intermediate_size"`
	NumHiddenLayers       *int      `json:"num_hidden_layers"`
	NumAttentionHeads     *int      `json:"num_attention_heads"`
	NumKeyValueHeads      *int      `json:"num_key_value_heads"`
	HeadDim               *int      `json:"head_dim"`
	HiddenAct             *string   `json:"hidden_act"`
	RMSNormEps            *float64  `json:"rms_norm_eps"`
	MaxPositionEmbeddings *int      `json:"max_position_embeddings"`
	TieWordEmbeddings     bool      `json:"tie_word_embeddings"`
	AttentionBias         bool      `json:"attention_bias"`
	MLPBias               bool      `json:"mlp_bias"`
	SlidingWindow         *int      `json:"sliding_window"`
	KeepWindowSize        *int      `json:"keep_window_size"`
	IsMoE                 bool      `json:"is_moe"`
	NumExperts            *int      `json:"num_experts"`
	NumExpertsPerTok      *int      `json:"num_experts_per_tok"`
	NormTopKProb          bool      `json:"norm_topk_prob"`
	RopeParameters        *ropeJSON `json:"rope_parameters"`
	RopeScaling           *ropeJSON `json:"rope_scaling"`
	RopeTheta             *float64  `json:"rope_theta"`
	BOSTokenID            *int      `json:"bos_token_id"`
	PadTokenID            *int      `json:"pad_token_id"`
	EOSTokenID            tokenIDs  `json:"eos_token_id"`
	DType                 string    `json:"dtype"`
	TorchDType            string    `json:"torch_dtype"`
}

func or[T any](p *T, def T) T {
	if p != nil {
		return *p
	}
	return def
}

// ParseConfig reads a config.json; file names it in errors. An architecture other than
// DogeForCausalLM is an error wrapping ErrArchitecture, a value that cannot describe a
// model one wrapping ErrConfig.
func ParseConfig(data []byte, file string) (*Config, error) {
	var j configJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, errorf(file, "", ErrConfig, "%v", err)
	}
	if err := checkArchitecture(j.Architectures, j.ModelType, file); err != nil {
		return nil, err
	}
	c := &Config{
		Architectures:         j.Architectures,
		ModelType:             j.ModelType,
		VocabSize:             or(j.VocabSize, 32768),
		HiddenSize:            or(j.HiddenSize, 1024),
		IntermediateSize:      or(j.IntermediateSize, 2048),
		NumHiddenLayers:       or(j.NumHiddenLayers, 32),
		NumAttentionHeads:     or(j.NumAttentionHeads, 8),
		HiddenAct:             or(j.HiddenAct, "silu"),
		RMSNormEps:            or(j.RMSNormEps, 1e-6),
		MaxPositionEmbeddings: or(j.MaxPositionEmbeddings, 2048),
		TieWordEmbeddings:     j.TieWordEmbeddings,
		AttentionBias:         j.AttentionBias,
		MLPBias:               j.MLPBias,
		SlidingWindow:         or(j.SlidingWindow, 0),
		KeepWindowSize:        or(j.KeepWindowSize, 2048),
		IsMoE:                 j.IsMoE,
		NumExperts:            or(j.NumExperts, 16384),
		NumExpertsPerTok:      or(j.NumExpertsPerTok, 64),
		NormTopKProb:          j.NormTopKProb,
		BOSTokenID:            or(j.BOSTokenID, -1),
		PadTokenID:            or(j.PadTokenID, -1),
		EOSTokenIDs:           j.EOSTokenID,
		DType:                 j.DType,
	}
	if c.DType == "" {
		c.DType = j.TorchDType
	}
	c.NumKeyValueHeads = or(j.NumKeyValueHeads, c.NumAttentionHeads)
	if c.NumAttentionHeads > 0 {
		c.HeadDim = or(j.HeadDim, c.HiddenSize/c.NumAttentionHeads)
	}
	rope, err := parseRoPE(j, file)
	if err != nil {
		return nil, err
	}
	c.RoPE = rope
	if err := c.check(file); err != nil {
		return nil, err
	}
	return c, nil
}

func checkArchitecture(archs []string, modelType, file string) error {
	for _, a := range archs {
		for _, s := range supportedArchitectures {
			if a == s {
				return nil
			}
		}
	}
	if len(archs) == 0 && modelType == "doge" {
		return nil
	}
	return errorf(file, "", ErrArchitecture, "architectures %q, model_type %q; supported: %v", archs, modelType, supportedArchitectures)
}

func parseRoPE(j configJSON, file string) (RoPE, error) {
	r := RoPE{Type: "default", Theta: or(j.RopeTheta, 10000), PartialRotaryFactor: 1}
	p := j.RopeParameters
	if p == nil {
		p = j.RopeScaling
	}
	if p == nil {
		return r, nil
	}
	switch {
	case p.RopeType != "":
		r.Type = p.RopeType
	case p.Type != "":
		r.Type = p.Type
	}
	if !ropeTypes[r.Type] {
		return r, errorf(file, "", ErrConfig, "rope type %q is not one of default, linear, dynamic, yarn, longrope, llama3", r.Type)
	}
	r.Theta = or(p.RopeTheta, r.Theta)
	r.Factor = p.Factor
	r.OriginalMaxPositionEmbeddings = p.OriginalMaxPositionEmbeddings
	r.AttentionFactor = p.AttentionFactor
	r.BetaFast, r.BetaSlow = p.BetaFast, p.BetaSlow
	r.LowFreqFactor, r.HighFreqFactor = p.LowFreqFactor, p.HighFreqFactor
	r.PartialRotaryFactor = or(p.PartialRotaryFactor, 1)
	r.ShortFactor, r.LongFactor = p.ShortFactor, p.LongFactor
	r.Truncate = p.Truncate
	if r.Type != "default" && r.Type != "longrope" && !(r.Factor > 0) {
		return r, errorf(file, "", ErrConfig, "rope type %q needs a positive factor, have %v", r.Type, r.Factor)
	}
	return r, nil
}

func (c *Config) check(file string) error {
	bad := func(format string, a ...any) error { return errorf(file, "", ErrConfig, format, a...) }
	switch {
	case c.VocabSize < 1 || c.HiddenSize < 1 || c.IntermediateSize < 1 || c.NumHiddenLayers < 1:
		return bad("vocab_size %d, hidden_size %d, intermediate_size %d and num_hidden_layers %d must be positive",
			c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers)
	case c.NumAttentionHeads < 1 || c.NumKeyValueHeads < 1 || c.NumAttentionHeads%c.NumKeyValueHeads != 0:
		return bad("num_attention_heads %d must be a positive multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	case c.HeadDim < 2 || c.HeadDim%2 != 0:
		return bad("head_dim %d must be even and positive (rotary embedding)", c.HeadDim)
	case c.KeepWindowSize < 1:
		return bad("keep_window_size %d must be positive", c.KeepWindowSize)
	case c.SlidingWindow < 0:
		return bad("sliding_window %d must not be negative", c.SlidingWindow)
	case !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0):
		return bad("rms_norm_eps %v must be positive and finite", c.RMSNormEps)
	case c.MaxPositionEmbeddings < 1:
		return bad("max_position_embeddings %d must be positive", c.MaxPositionEmbeddings)
	case !(c.RoPE.Theta > 0) || math.IsInf(c.RoPE.Theta, 0):
		return bad("rope_theta %v must be positive and finite", c.RoPE.Theta)
	}
	for _, id := range append([]int{c.BOSTokenID, c.PadTokenID}, c.EOSTokenIDs...) {
		if id < -1 || id >= c.VocabSize {
			return bad("token id %d outside the vocabulary of %d", id, c.VocabSize)
		}
	}
	if c.IsMoE {
		keys := int(math.Sqrt(float64(c.NumExperts)))
		if c.NumExperts < 1 || c.NumExpertsPerTok < 1 || c.NumExpertsPerTok > keys*keys {
			return bad("num_experts %d and num_experts_per_tok %d: need 1 <= num_experts_per_tok <= floor(sqrt(num_experts))^2", c.NumExperts, c.NumExpertsPerTok)
		}
	}
	return nil
}

// NumKeys is the CDMoE router's keys per side, floor(sqrt(NumExperts)).
func (c *Config) NumKeys() int { return int(math.Sqrt(float64(c.NumExperts))) }

// GenerationConfig is a generation_config.json, with transformers' defaults for absent
// fields (and the model config's token ids when the file is absent).
type GenerationConfig struct {
	BOSTokenID        int // -1 when absent
	PadTokenID        int // -1 when absent
	EOSTokenIDs       []int
	DoSample          bool
	Temperature       float64
	TopK              int
	TopP              float64
	RepetitionPenalty float64
	MaxNewTokens      int // 0 when absent
	MaxLength         int
}

type generationJSON struct {
	BOSTokenID        *int     `json:"bos_token_id"`
	PadTokenID        *int     `json:"pad_token_id"`
	EOSTokenID        tokenIDs `json:"eos_token_id"`
	DoSample          bool     `json:"do_sample"`
	Temperature       *float64 `json:"temperature"`
	TopK              *int     `json:"top_k"`
	TopP              *float64 `json:"top_p"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	MaxNewTokens      *int     `json:"max_new_tokens"`
	MaxLength         *int     `json:"max_length"`
}

// DefaultGeneration is the generation settings of a model without generation_config.json.
func DefaultGeneration(c *Config) GenerationConfig {
	return GenerationConfig{BOSTokenID: c.BOSTokenID, PadTokenID: c.PadTokenID, EOSTokenIDs: c.EOSTokenIDs,
		Temperature: 1, TopK: 50, TopP: 1, RepetitionPenalty: 1, MaxLength: 20}
}

// ParseGeneration reads a generation_config.json over the defaults of c.
func ParseGeneration(data []byte, file string, c *Config) (GenerationConfig, error) {
	g := DefaultGeneration(c)
	var j generationJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return g, errorf(file, "", ErrConfig, "%v", err)
	}
	g.BOSTokenID = or(j.BOSTokenID, g.BOSTokenID)
	g.PadTokenID = or(j.PadTokenID, g.PadTokenID)
	if j.EOSTokenID != nil {
		g.EOSTokenIDs = j.EOSTokenID
	}
	g.DoSample = j.DoSample
	g.Temperature = or(j.Temperature, g.Temperature)
	g.TopK = or(j.TopK, g.TopK)
	g.TopP = or(j.TopP, g.TopP)
	g.RepetitionPenalty = or(j.RepetitionPenalty, g.RepetitionPenalty)
	g.MaxNewTokens = or(j.MaxNewTokens, 0)
	g.MaxLength = or(j.MaxLength, g.MaxLength)
	switch {
	case g.Temperature < 0 || math.IsNaN(g.Temperature):
		return g, errorf(file, "", ErrConfig, "temperature %v must not be negative", g.Temperature)
	case !(g.TopP > 0 && g.TopP <= 1):
		return g, errorf(file, "", ErrConfig, "top_p %v must be in (0, 1]", g.TopP)
	case g.TopK < 0:
		return g, errorf(file, "", ErrConfig, "top_k %d must not be negative", g.TopK)
	case !(g.RepetitionPenalty > 0):
		return g, errorf(file, "", ErrConfig, "repetition_penalty %v must be positive", g.RepetitionPenalty)
	case g.MaxNewTokens < 0 || g.MaxLength < 0:
		return g, errorf(file, "", ErrConfig, "max_new_tokens %d and max_length %d must not be negative", g.MaxNewTokens, g.MaxLength)
	}
	for _, id := range append([]int{g.BOSTokenID, g.PadTokenID}, g.EOSTokenIDs...) {
		if id < -1 || id >= c.VocabSize {
			return g, errorf(file, "", ErrConfig, "token id %d outside the vocabulary of %d", id, c.VocabSize)
		}
	}
	return g, nil
}

func (r RoPE) String() string {
	return fmt.Sprintf("%s(theta %g, factor %g)", r.Type, r.Theta, r.Factor)
}
