package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRoundTrip: byte-level BPE without a normalizer loses nothing, so decoding the ids
// of any UTF-8 text gives the text back (special tokens written in it included).
func FuzzRoundTrip(f *testing.F) {
	b, err := os.ReadFile(filepath.Join(fixtures, "tokenizer_cases.json"))
	if err != nil {
		f.Fatal(err)
	}
	var cases []tokenizerCase
	if err := json.Unmarshal(b, &cases); err != nil {
		f.Fatal(err)
	}
	for _, c := range cases {
		f.Add(c.Text)
	}
	tk, err := Load(filepath.Join(fixtures, "tokenizers", "doge", "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if !utf8.ValidString(text) {
			return
		}
		ids := tk.Encode(text, false)
		got, err := tk.Decode(ids, false)
		if err != nil || got != text {
			t.Fatalf("%q: ids %v decode to %q, %v", text, ids, got, err)
		}
		if strings.ContainsRune(text, utf8.RuneError) {
			return // the stream holds back text ending in U+FFFD, as tokenizers' does
		}
		sd := tk.NewStreamDecoder(false)
		streamed := ""
		for _, id := range ids {
			s, _, err := sd.Next(id)
			if err != nil {
				t.Fatal(err)
			}
			streamed += s
		}
		if streamed != text {
			t.Fatalf("%q: streamed %q", text, streamed)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tk, err := Load(filepath.Join(fixtures, "tokenizers", "doge", "tokenizer.json"))
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(fixtures, "tokenizer_cases.json"))
	if err != nil {
		b.Fatal(err)
	}
	var cases []tokenizerCase
	if err := json.Unmarshal(data, &cases); err != nil {
		b.Fatal(err)
	}
	var text strings.Builder
	for text.Len() < 1<<20 {
		for _, c := range cases {
			text.WriteString(c.Text)
		}
	}
	s := text.String()
	b.SetBytes(int64(len(s)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk.Encode(s, true)
	}
}
