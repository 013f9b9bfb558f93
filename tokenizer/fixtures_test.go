package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/checkpoint"
)

const fixtures = "../testdata/doge"

// tokenizerCase is one entry of tokenizer_cases.json: what HF tokenizers 0.23 gave.
type tokenizerCase struct {
	Tokenizer          string    `json:"tokenizer"`
	Text               string    `json:"text"`
	IDs                []int     `json:"ids"`
	Tokens             []string  `json:"tokens"`
	IDsWithSpecial     []int     `json:"ids_with_special"`
	Decoded            string    `json:"decoded"`
	DecodedSkipSpecial string    `json:"decoded_skip_special"`
	Stream             []*string `json:"stream"`
}

func loadCases(t *testing.T) []tokenizerCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, "tokenizer_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cs []tokenizerCase
	if err := json.Unmarshal(b, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func loadFixture(t *testing.T, name string) *Tokenizer {
	t.Helper()
	tk, err := Load(filepath.Join(fixtures, "tokenizers", name, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestFixtureCases(t *testing.T) {
	toks := map[string]*Tokenizer{"doge": loadFixture(t, "doge"), "gpt2": loadFixture(t, "gpt2")}
	cases := loadCases(t)
	if len(cases) < 60 {
		t.Fatalf("%d cases", len(cases))
	}
	for i, c := range cases {
		tk := toks[c.Tokenizer]
		ids := tk.Encode(c.Text, false)
		if !slices.Equal(ids, c.IDs) {
			gotTok, _ := tk.Tokens(ids)
			t.Errorf("%d %s %q:\n ids    %v\n want   %v\n tokens %q\n want   %q", i, c.Tokenizer, c.Text, ids, c.IDs, gotTok, c.Tokens)
			continue
		}
		got, _ := tk.Tokens(ids)
		for j := range got {
			// tokenizers reports an added token as the text it took, whitespace it
			// stripped (lstrip, rstrip) included; Tokens gives the token itself.
			if got[j] != c.Tokens[j] && !(tk.isAdded(ids[j]) && strings.TrimSpace(c.Tokens[j]) == got[j]) {
				t.Errorf("%d %s %q: tokens %q, want %q", i, c.Tokenizer, c.Text, got, c.Tokens)
				break
			}
		}
		if got := tk.Encode(c.Text, true); !slices.Equal(got, c.IDsWithSpecial) {
			t.Errorf("%d %s %q: with special tokens %v, want %v", i, c.Tokenizer, c.Text, got, c.IDsWithSpecial)
		}
		for _, skip := range []bool{false, true} {
			want := c.Decoded
			if skip {
				want = c.DecodedSkipSpecial
			}
			if got, err := tk.Decode(c.IDsWithSpecial, skip); err != nil || got != want {
				t.Errorf("%d %s %q: Decode(skip %v) = %q, %v; want %q", i, c.Tokenizer, c.Text, skip, got, err, want)
			}
		}
		sd := tk.NewStreamDecoder(false)
		for j, id := range c.IDsWithSpecial {
			text, ok, err := sd.Next(id)
			want := c.Stream[j]
			if err != nil || ok != (want != nil) || (ok && text != *want) {
				w := "<none>"
				if want != nil {
					w = *want
				}
				t.Errorf("%d %s %q: stream step %d = %q %v %v, want %q", i, c.Tokenizer, c.Text, j, text, ok, err, w)
				break
			}
		}
	}
}

// The models' prompts are 300 distinct random tokens and their greedy continuations
// repeat pieces of characters: their decodings (by tokenizers, skipping special tokens)
// test the byte-level decoder's replacement of broken UTF-8.
func TestFixtureModelTexts(t *testing.T) {
	for _, name := range []string{"tiny", "moe", "rope"} {
		dir := filepath.Join(fixtures, name)
		tk, err := Load(filepath.Join(dir, "tokenizer.json"))
		if err != nil {
			t.Fatal(err)
		}
		var ref struct {
			PromptText string `json:"prompt_text"`
			GreedyIDs  []int  `json:"greedy_ids"`
			GreedyText string `json:"greedy_text"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatal(err)
		}
		f, err := checkpoint.OpenFile(filepath.Join(dir, "reference.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		pt, err := f.Tensor("prompt_ids")
		if err != nil {
			t.Fatal(err)
		}
		p64, err := pt.Int64s()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		prompt := make([]int, len(p64))
		for i, v := range p64 {
			prompt[i] = int(v)
		}
		for what, c := range map[string]struct {
			ids  []int
			want string
		}{"prompt": {prompt, ref.PromptText}, "greedy": {ref.GreedyIDs, ref.GreedyText}} {
			if got, err := tk.Decode(c.ids, true); err != nil || got != c.want {
				t.Errorf("%s %s: %q, %v\nwant %q", name, what, got, err, c.want)
			}
		}
	}
}
