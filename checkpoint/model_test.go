package checkpoint

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rewriteTiny copies the tiny fixture and rewrites its weights through edit.
func rewriteTiny(t *testing.T, edit func([]entry) []entry) string {
	t.Helper()
	dir := copyDir(t, filepath.Join(fixtures, "tiny"))
	p := filepath.Join(dir, WeightsFile)
	writeSafetensors(t, p, edit(readEntries(t, p)))
	return dir
}

func wantError(t *testing.T, err error, kind error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q is not %v", err, kind)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not say %q", err, p)
		}
	}
}

func dogeError(t *testing.T, dir string) error {
	t.Helper()
	m, err := Open(dir)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.Doge()
	return err
}

func TestDogeTensorErrors(t *testing.T) {
	const a = "model.layers.1.self_attn.A"
	edit := func(fn func(*entry) bool) func([]entry) []entry {
		return func(es []entry) []entry {
			var out []entry
			for i := range es {
				if es[i].name != a || fn(&es[i]) {
					out = append(out, es[i])
				}
			}
			return out
		}
	}
	t.Run("missing", func(t *testing.T) {
		dir := rewriteTiny(t, edit(func(*entry) bool { return false }))
		wantError(t, dogeError(t, dir), ErrMissing, a, filepath.Join(dir, WeightsFile))
	})
	t.Run("shape", func(t *testing.T) {
		dir := rewriteTiny(t, edit(func(e *entry) bool {
			e.shape = []int{1, 2}
			return true
		}))
		wantError(t, dogeError(t, dir), ErrShape, a, filepath.Join(dir, WeightsFile), "[1 2], want [2]")
	})
	t.Run("dtype", func(t *testing.T) {
		dir := rewriteTiny(t, edit(func(e *entry) bool {
			e.dtype = I32
			return true
		}))
		wantError(t, dogeError(t, dir), ErrDType, a, filepath.Join(dir, WeightsFile), "I32")
	})
	t.Run("mixed dtypes", func(t *testing.T) {
		// F32 A beside a BF16 copy of it is fine: each tensor has its own dtype.
		dir := rewriteTiny(t, edit(func(e *entry) bool {
			var b []byte
			for i := 0; i < len(e.data); i += 4 {
				b = binary.LittleEndian.AppendUint16(b, uint16(binary.LittleEndian.Uint32(e.data[i:])>>16))
			}
			e.dtype, e.data = BF16, b
			return true
		}))
		if err := dogeError(t, dir); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("untied without lm_head", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "tiny"))
		editJSON(t, filepath.Join(dir, ConfigFile), func(m map[string]any) { m["tie_word_embeddings"] = false })
		wantError(t, dogeError(t, dir), ErrMissing, "lm_head.weight")
	})
	t.Run("config shape", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "tiny"))
		editJSON(t, filepath.Join(dir, ConfigFile), func(m map[string]any) { m["intermediate_size"] = 512 })
		wantError(t, dogeError(t, dir), ErrShape, "model.layers.0.mlp.gate_proj.weight", "[256 128], want [512 128]")
	})
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		kind error
		want string
	}{
		{"architecture", func(m map[string]any) { m["architectures"] = []string{"LlamaForCausalLM"}; m["model_type"] = "llama" }, ErrArchitecture, `architectures ["LlamaForCausalLM"], model_type "llama"; supported: [DogeForCausalLM]`},
		{"no architecture", func(m map[string]any) { delete(m, "architectures"); delete(m, "model_type") }, ErrArchitecture, "supported"},
		{"heads", func(m map[string]any) { m["num_attention_heads"] = 3 }, ErrConfig, "num_attention_heads 3 must be a positive multiple of num_key_value_heads 2"},
		{"head dim", func(m map[string]any) { m["head_dim"] = 63 }, ErrConfig, "head_dim 63"},
		{"rope type", func(m map[string]any) { m["rope_parameters"] = map[string]any{"rope_type": "spiral"} }, ErrConfig, `rope type "spiral"`},
		{"rope factor", func(m map[string]any) { m["rope_parameters"] = map[string]any{"rope_type": "linear"} }, ErrConfig, "positive factor"},
		{"eps", func(m map[string]any) { m["rms_norm_eps"] = 0 }, ErrConfig, "rms_norm_eps"},
		{"window", func(m map[string]any) { m["keep_window_size"] = 0 }, ErrConfig, "keep_window_size 0"},
		{"eos", func(m map[string]any) { m["eos_token_id"] = 5000 }, ErrConfig, "token id 5000"},
		{"experts", func(m map[string]any) { m["is_moe"] = true; m["num_experts"] = 4; m["num_experts_per_tok"] = 5 }, ErrConfig, "num_experts 4"},
		{"not json", nil, ErrConfig, "invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, filepath.Join(fixtures, "tiny"))
			p := filepath.Join(dir, ConfigFile)
			if tc.edit == nil {
				writeFile(p, []byte("{not json"))
			} else {
				editJSON(t, p, tc.edit)
			}
			_, err := Open(dir)
			wantError(t, err, tc.kind, p, tc.want)
		})
	}
}

func TestConfigForms(t *testing.T) {
	// Older configs: rope_scaling with "type" and a top-level rope_theta, no head_dim,
	// num_key_value_heads absent, eos as a list, torch_dtype.
	c, err := ParseConfig([]byte(`{"architectures":["DogeForCausalLM"],"hidden_size":768,"num_attention_heads":6,
		"rope_theta":500000.0,"rope_scaling":{"type":"dynamic","factor":4.0,"original_max_position_embeddings":2048},
		"eos_token_id":[1,2],"bos_token_id":null,"torch_dtype":"float32","vocab_size":32768}`), "config.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 128 || c.NumKeyValueHeads != 6 || c.RoPE.Type != "dynamic" || c.RoPE.Theta != 500000 ||
		c.RoPE.OriginalMaxPositionEmbeddings != 2048 || !slices.Equal(c.EOSTokenIDs, []int{1, 2}) ||
		c.BOSTokenID != -1 || c.DType != "float32" || c.KeepWindowSize != 2048 || c.NumHiddenLayers != 32 {
		t.Fatalf("%+v", c)
	}
	// model_type doge without architectures is accepted.
	if _, err := ParseConfig([]byte(`{"model_type":"doge"}`), "config.json"); err != nil {
		t.Fatal(err)
	}
	g, err := ParseGeneration([]byte(`{"eos_token_id":7,"temperature":0.7,"top_p":0.9,"do_sample":true}`), "g.json", c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.EOSTokenIDs, []int{7}) || g.Temperature != 0.7 || g.TopP != 0.9 || !g.DoSample || g.TopK != 50 || g.RepetitionPenalty != 1 {
		t.Fatalf("%+v", g)
	}
	if g, err = ParseGeneration([]byte(`{}`), "g.json", c); err != nil || !slices.Equal(g.EOSTokenIDs, []int{1, 2}) {
		t.Fatalf("%+v %v", g, err)
	}
	for _, bad := range []string{`{"top_p":0}`, `{"top_p":1.5}`, `{"temperature":-1}`, `{"top_k":-1}`, `{"repetition_penalty":0}`, `{"eos_token_id":"x"}`} {
		if _, err := ParseGeneration([]byte(bad), "g.json", c); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "g.json") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestDirectoryErrors(t *testing.T) {
	t.Run("no config", func(t *testing.T) {
		dir := t.TempDir()
		_, err := Open(dir)
		wantError(t, err, ErrMissing, filepath.Join(dir, ConfigFile))
	})
	t.Run("no weights", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "tiny"))
		os.Remove(filepath.Join(dir, WeightsFile))
		writeFile(filepath.Join(dir, "pytorch_model.bin"), []byte("x"))
		_, err := Open(dir)
		wantError(t, err, ErrMissing, dir, "neither model.safetensors nor model.safetensors.index.json", "pytorch_model.bin")
	})
	t.Run("bad generation config", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "tiny"))
		writeFile(filepath.Join(dir, GenerationFile), []byte(`{"top_p": 2}`))
		_, err := Open(dir)
		wantError(t, err, ErrConfig, GenerationFile, "top_p 2")
	})
	t.Run("no generation config or tokenizer", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "tiny"))
		os.Remove(filepath.Join(dir, GenerationFile))
		os.Remove(filepath.Join(dir, TokenizerFile))
		m := open(t, dir)
		if m.Tokenizer != "" || !slices.Equal(m.Generation.EOSTokenIDs, []int{1}) || m.Generation.MaxLength != 20 {
			t.Fatalf("%q %+v", m.Tokenizer, m.Generation)
		}
	})
	t.Run("corrupt weights", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "tiny"))
		p := filepath.Join(dir, WeightsFile)
		b := readFile(t, p)
		writeFile(p, b[:len(b)/2])
		_, err := Open(dir)
		wantError(t, err, ErrCorrupt, p, "outside")
	})
}

func TestIndexErrors(t *testing.T) {
	const name = "model.layers.0.mlp.up_embed.weight"
	for _, tc := range []struct {
		what  string
		shard func(string) string
		kind  error
		want  []string
	}{
		{"shard missing", func(string) string { return "model-00009-of-00009.safetensors" }, ErrMissing, []string{name, "model-00009-of-00009.safetensors does not exist"}},
		{"wrong shard", func(string) string { return "model-00001-of-00005.safetensors" }, ErrMissing, []string{name, "model-00001-of-00005.safetensors", "listed there by model.safetensors.index.json"}},
		{"outside the directory", func(string) string { return "../moe/model-00003-of-00005.safetensors" }, ErrCorrupt, []string{name, IndexFile, "not a file name in the directory"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			dir := copyDir(t, filepath.Join(fixtures, "moe"))
			editJSON(t, filepath.Join(dir, IndexFile), func(m map[string]any) {
				wm := m["weight_map"].(map[string]any)
				wm[name] = tc.shard(wm[name].(string))
			})
			_, err := Open(dir)
			wantError(t, err, tc.kind, tc.want...)
		})
	}
	t.Run("empty", func(t *testing.T) {
		dir := copyDir(t, filepath.Join(fixtures, "moe"))
		writeFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{}}`))
		_, err := Open(dir)
		wantError(t, err, ErrCorrupt, IndexFile, "no tensors")
	})
	t.Run("missing tensor", func(t *testing.T) {
		m := open(t, filepath.Join(fixtures, "moe"))
		_, err := m.Tensor("model.layers.7.mlp.up_embed.weight")
		wantError(t, err, ErrMissing, "model.layers.7.mlp.up_embed.weight", filepath.Join(fixtures, "moe", IndexFile))
	})
}
