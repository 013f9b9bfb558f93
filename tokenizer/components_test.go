package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// pre runs a pre-tokenizer on a whole text.
func pre(p preTokenizer, text string) []string {
	out, _ := p([]string{text}, true)
	return out
}

func parse(t *testing.T, js string) *Tokenizer {
	t.Helper()
	tk, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// A character-level BPE with byte fallback and an unknown token, like SentencePiece
// conversions.
const fallbackJSON = `{
 "added_tokens": [{"id": 0, "content": "<unk>", "special": true}],
 "model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<0xC3>": 4, "<0xA9>": 5},
   "merges": ["a b"], "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": %v},
 "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
}`

func TestByteFallbackAndUnknown(t *testing.T) {
	tk := parse(t, fmt.Sprintf(fallbackJSON, true))
	for _, tc := range []struct {
		text string
		want []int
	}{
		{"abé", []int{3, 4, 5}},    // é is C3 A9, both bytes in the vocabulary
		{"a€€b", []int{1, 0, 2}},   // € (E2 82 AC) has no byte tokens: unk, fused
		{"ba", []int{2, 1}},        // no merge "b a"
		{"aab", []int{1, 3}},       // one merge, leftmost pair of its rank
		{"", nil},                  //
		{"a\xffb", []int{1, 0, 2}}, // invalid UTF-8 reads as U+FFFD: unk
	} {
		if got := tk.Encode(tc.text, true); !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
	if got := parse(t, fmt.Sprintf(fallbackJSON, false)).Encode("a€€b", false); !slices.Equal(got, []int{1, 0, 0, 2}) {
		t.Errorf("without fuse_unk: %v", got)
	}
	for _, tc := range []struct {
		ids  []int
		skip bool
		want string
	}{
		{[]int{3, 4, 5}, false, "abé"},
		{[]int{4}, false, "\uFFFD"},              // a lone C3: one U+FFFD per byte token
		{[]int{4, 4, 1}, false, "\uFFFD\uFFFDa"}, //
		{[]int{0, 1}, false, "<unk>a"},
		{[]int{0, 1}, true, "a"},
	} {
		if got, err := tk.Decode(tc.ids, tc.skip); err != nil || got != tc.want {
			t.Errorf("Decode(%v, %v) = %q, %v; want %q", tc.ids, tc.skip, got, err, tc.want)
		}
	}
	if _, err := tk.Decode([]int{1, 6}, false); err == nil || !strings.Contains(err.Error(), "id 6 (at 1)") {
		t.Errorf("Decode of an unknown id: %v", err)
	}
	if _, err := tk.Tokens([]int{-1}); err == nil {
		t.Error("Tokens of -1")
	}
	// ids 0 and 2 are holes between the vocabulary's ids
	holes := parse(t, `{"model": {"type": "BPE", "vocab": {"a": 1, "b": 3}, "merges": []}}`)
	for id, want := range map[int]bool{0: false, 1: true, 2: false, 3: true, 4: false} {
		if _, ok := holes.IDToToken(id); ok != want {
			t.Errorf("IDToToken(%d) ok %v, want %v", id, ok, want)
		}
	}
	if _, err := holes.Decode([]int{0}, false); err == nil {
		t.Error("Decode of a hole")
	}
	// The stream gives é only once both of its byte tokens are in.
	sd := tk.NewStreamDecoder(false)
	var got []string
	for _, id := range []int{1, 4, 5, 2} {
		s, ok, err := sd.Next(id)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(ok, ":", s))
	}
	if want := []string{"true:a", "false:", "true:é", "true:b"}; !slices.Equal(got, want) {
		t.Errorf("stream %q, want %q", got, want)
	}
	if _, _, err := sd.Next(99); err == nil {
		t.Error("stream took an unknown id")
	}
	if s, ok, err := sd.Next(1); err != nil || !ok || s != "a" {
		t.Errorf("stream after an error: %q %v %v", s, ok, err)
	}
}

func TestAddedTokenOptions(t *testing.T) {
	m := newAddedMatcher([]*AddedToken{
		{ID: 10, Content: "<x>", SingleWord: true},
		{ID: 11, Content: "[R]", RStrip: true},
		{ID: 12, Content: "<L>", LStrip: true},
		{ID: 13, Content: "<", Special: true},
		{ID: 14, Content: "<LL>"},
	})
	show := func(ps []piece) string {
		var b []string
		for _, p := range ps {
			if p.token != nil {
				b = append(b, fmt.Sprintf("#%d%q", p.token.ID, p.text))
			} else {
				b = append(b, fmt.Sprintf("%q", p.text))
			}
		}
		return strings.Join(b, " ")
	}
	for _, tc := range []struct{ text, want string }{
		{"a<x>b", `"a<x>b"`},              // single word: not between letters, and its match is used up
		{"a <x> b", `"a " #10"<x>" " b"`}, //
		{"<x>", `#10"<x>"`},               //
		{"a[R]  b", `"a" #11"[R]  " "b"`}, // rstrip takes the spaces after
		{"a  <L>b", `"a" #12"  <L>" "b"`}, // lstrip takes the spaces before
		{"[R] <L>", `#11"[R] " #12"<L>"`}, // lstrip does not take what rstrip took
		{"<LL><L>", `#14"<LL>" #12"<L>"`}, // longest at the same start
		{"no tokens", `"no tokens"`},      //
	} {
		if got := show(m.split(tc.text)); got != tc.want {
			t.Errorf("split(%q) = %s, want %s", tc.text, got, tc.want)
		}
	}
}

func TestSplitBehaviors(t *testing.T) {
	// tokenizers' own example for SplitDelimiterBehavior.
	dash := "-"
	p, err := newPattern(patternJSON{String: &dash})
	if err != nil {
		t.Fatal(err)
	}
	for behavior, want := range map[string][]string{
		"Removed":            {"the", "final", "countdown"},
		"Isolated":           {"the", "-", "final", "-", "-", "countdown"},
		"MergedWithPrevious": {"the-", "final-", "-", "countdown"},
		"MergedWithNext":     {"the", "-final", "-", "-countdown"},
		"Contiguous":         {"the", "-", "final", "--", "countdown"},
	} {
		if got := pre(splitPreTokenizer(p, behavior, false), "the-final--countdown"); !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", behavior, got, want)
		}
	}
	if got := pre(splitPreTokenizer(p, "Removed", true), "the-final--countdown"); !slices.Equal(got, []string{"-", "-", "-"}) {
		t.Errorf("inverted Removed: %q", got)
	}
	for individual, want := range map[bool][]string{
		false: {"abc", "123", "de", "4"},
		true:  {"abc", "1", "2", "3", "de", "4"},
	} {
		if got := pre(digitsPreTokenizer(individual), "abc123de4"); !slices.Equal(got, want) {
			t.Errorf("Digits(%v): %q, want %q", individual, got, want)
		}
	}
}

func TestLookaheadPattern(t *testing.T) {
	// Llama 3's pattern: \s+(?!\S) leaves the last space of a run to the word after it;
	// a run at the end, or before a newline, stays whole.
	re := `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	p, err := newPattern(patternJSON{Regex: &re})
	if err != nil {
		t.Fatal(err)
	}
	split := func(s []string) []string { return pre(splitPreTokenizer(p, "Isolated", false), s[0]) }
	for text, want := range map[string][]string{
		"Hello   world  \n\n  x   ": {"Hello", "  ", " world", "  \n\n", " ", " x", "   "},
		"It'S 12345 ok":             {"It", "'S", " ", "123", "45", " ok"},
		"a\u00a0\u00a0b":            {"a", "\u00a0", "\u00a0b"}, // no-break spaces are \s
	} {
		if got := split([]string{text}); !slices.Equal(got, want) {
			t.Errorf("%q: %q, want %q", text, got, want)
		}
	}
	gpt2 := pre(byteLevelPreTokenizer(true, true), "Hi  there  ")
	if want := []string{"ĠHi", "Ġ", "Ġthere", "ĠĠ"}; !slices.Equal(gpt2, want) {
		t.Errorf("GPT-2 ByteLevel: %q, want %q", gpt2, want)
	}
}

func TestLossyUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"ok":               "ok",
		"\xf0\x9f\x98":     "\uFFFD",             // a 4-byte sequence cut short: one
		"\xf0\x9f\x98A":    "\uFFFDA",            //
		"\xc0\x80":         "\uFFFD\uFFFD",       // C0 never leads
		"\xed\xa0\x80":     "\uFFFD\uFFFD\uFFFD", // surrogates: ED A0 is no prefix
		"a\xe2\x82":        "a\uFFFD",
		"\xe2\x82\xac\xe2": "€\uFFFD",
		"\xf4\x90\x80\x80": "\uFFFD\uFFFD\uFFFD\uFFFD", // above U+10FFFF
	} {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestComponents(t *testing.T) {
	base := `{"added_tokens": [{"id": 5, "content": "<s>", "special": true}, {"id": 6, "content": "</s>", "special": true}],
	 "model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3, "B": 4}, "merges": [["▁", "a"]]}, %s}`
	tk := parse(t, fmt.Sprintf(base, `
	 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, {"type": "Lowercase"}]},
	 "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 6], "cls": ["<s>", 5]},
	 "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}`))
	if got := tk.Encode("A b", true); !slices.Equal(got, []int{5, 3, 0, 2, 6}) {
		t.Errorf("Encode = %v", got)
	}
	if got, _ := tk.Decode([]int{3, 0, 2}, false); got != "a b" {
		t.Errorf("Metaspace decode %q", got)
	}
	tk = parse(t, fmt.Sprintf(base, `
	 "normalizer": {"type": "Strip", "strip_left": true, "strip_right": true},
	 "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
	   "special_tokens": {"</s>": {"id": "</s>", "ids": [6], "tokens": ["</s>"]}}},
	 "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}`))
	if got := tk.Encode("  ab  ", true); !slices.Equal(got, []int{1, 2, 6}) {
		t.Errorf("Encode = %v", got)
	}
	if got, _ := tk.Decode([]int{3, 3}, false); got != "aa" {
		t.Errorf("Replace+Strip decode %q", got)
	}
	if got, _ := parse(t, fmt.Sprintf(base, `"normalizer": null`)).Decode([]int{1, 2}, false); got != "a b" {
		t.Errorf("no decoder: %q", got)
	}
}

func TestUnsupported(t *testing.T) {
	model := `"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}`
	for _, tc := range []struct{ js, want string }{
		{`{"model": {"type": "Unigram", "vocab": []}}`, `model type "Unigram"`},
		{`{"model": {"type": "WordPiece", "vocab": {}}}`, `model type "WordPiece"`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}}`, "dropout"},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}}`, `merge 0 ("a" "c")`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}}`, `unk_token "<unk>"`},
		{`{` + model + `, "pre_tokenizer": {"type": "Whitespace"}}`, `pre_tokenizer type "Whitespace"`},
		{`{` + model + `, "normalizer": {"type": "BertNormalizer"}}`, `normalizer type "BertNormalizer"`},
		{`{` + model + `, "decoder": {"type": "CTC"}}`, `decoder type "CTC"`},
		{`{` + model + `, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {}}}`, `special token "<s>"`},
		{`{` + model + `, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}}`, "pattern"},
		{`{` + model + `, "pre_tokenizer": {"type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways"}}`, "Sideways"},
		{`{}`, "no model"},
		{`{"model": `, "unexpected end"},
	} {
		if _, err := Parse([]byte(tc.js)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.want)
		}
	}
	if _, err := Load("no/such/tokenizer.json"); err == nil || !strings.Contains(err.Error(), "no/such/tokenizer.json") {
		t.Errorf("Load: %v", err)
	}
}

func TestConcurrentEncode(t *testing.T) {
	tk := loadFixture(t, "doge")
	cases := loadCases(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range cases {
				if c.Tokenizer == "doge" && !slices.Equal(tk.Encode(c.Text, false), c.IDs) {
					t.Errorf("concurrent Encode(%q) differs", c.Text)
				}
			}
		}()
	}
	wg.Wait()
}

func TestLowercase(t *testing.T) {
	for in, want := range map[string]string{
		"HeLLo":    "hello",
		"ὈΔΥΣΣΕΎΣ": "ὀδυσσεύς", // Rust's own example: the final sigma only
		"Σ":        "σ",        // no cased letter before
		"ΑΣ.":      "ας.",      // the period is case-ignorable
		"ΑΣΑ":      "ασα",
		"İstanbul": "i\u0307stanbul",
	} {
		if got := lowercase(in); got != want {
			t.Errorf("lowercase(%q) = %q, want %q", in, got, want)
		}
	}
}

// naiveMerge is BPE by its definition: merge the lowest-ranked adjacent pair, leftmost
// first, until none is left.
func naiveMerge(b *bpe, ids []int) []int {
	ids = append([]int(nil), ids...)
	for {
		best, at := merge{}, -1
		for i := 0; i+1 < len(ids); i++ {
			if m, ok := b.merges[[2]int{ids[i], ids[i+1]}]; ok && (at < 0 || m.rank < best.rank) {
				best, at = m, i
			}
		}
		if at < 0 {
			return ids
		}
		ids[at] = best.id
		ids = append(ids[:at+1], ids[at+2:]...)
	}
}

func TestMergeMatchesDefinition(t *testing.T) {
	tk := loadFixture(t, "doge")
	var words []string
	for _, c := range loadCases(t) {
		for _, w := range pre(tk.preTok, c.Text) {
			words = append(words, w)
		}
	}
	// and long words: runs of letters, repeated pieces, the whole prompt text unsplit
	words = append(words, byteLevel(strings.Repeat("敏捷的棕色狐狸", 200)), byteLevel(strings.Repeat("ab", 500)),
		byteLevel(strings.Repeat(" ", 300)), byteLevel(strings.ReplaceAll(loadCases(t)[len(loadCases(t))-1].Text, " ", "")))
	for _, w := range words {
		syms := tk.model.symbols(w)
		want := naiveMerge(tk.model, syms)
		if got := tk.model.merge(append([]int(nil), syms...)); !slices.Equal(got, want) {
			t.Fatalf("%q: %v, want %v", w, got, want)
		}
	}
}

func TestMetaspace(t *testing.T) {
	for _, tc := range []struct {
		scheme string
		split  bool
		text   string
		first  bool
		want   []string
	}{
		{"always", true, "Hello  world", true, []string{"▁Hello", "▁", "▁world"}},
		{"always", false, "Hello world", false, []string{"▁Hello▁world"}},
		{"first", true, "Hello world", true, []string{"▁Hello", "▁world"}},
		{"first", true, "Hello world", false, []string{"Hello", "▁world"}}, // after an added token
		{"never", true, " Hello", true, []string{"▁Hello"}},
		{"always", true, "▁x", true, []string{"▁x"}}, // already there
	} {
		got, _ := metaspacePreTokenizer("▁", tc.scheme, tc.split)([]string{tc.text}, tc.first)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s split %v %q first %v: %q, want %q", tc.scheme, tc.split, tc.text, tc.first, got, tc.want)
		}
	}
	// Through a whole tokenizer: "first" puts ▁ at the start of the text only, not after
	// an added token; the decoder takes it away again.
	tk := parse(t, `{"added_tokens": [{"id": 9, "content": "<s>", "special": true}],
	 "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
	 "model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3, "▁b": 4}, "merges": [["▁", "a"], ["▁", "b"]]},
	 "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}}`)
	for text, want := range map[string][]int{"a b": {3, 4}, "<s>a b": {9, 1, 4}, "b<s> a": {4, 9, 3}} {
		if got := tk.Encode(text, false); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v", text, got, want)
		}
	}
	if got, _ := tk.Decode([]int{3, 4}, false); got != "a b" {
		t.Errorf("Decode = %q", got)
	}
}
