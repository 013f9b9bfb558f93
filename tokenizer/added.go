package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AddedToken is a token of tokenizer.json's added_tokens: matched in the text before
// pre-tokenization and never split.
type AddedToken struct {
	ID         int
	Content    string
	SingleWord bool // only where no word character touches it
	LStrip     bool // takes the whitespace before it
	RStrip     bool // takes the whitespace after it
	Normalized bool // matched in the normalized text rather than the raw text
	Special    bool // left out by Decode when skipping special tokens
}

// addedMatcher finds added tokens leftmost first and, among those starting at the same
// place, longest first (the Aho-Corasick LeftmostLongest of tokenizers).
type addedMatcher struct {
	byFirst map[byte][]*AddedToken // by first byte, longest first
}

func newAddedMatcher(tokens []*AddedToken) *addedMatcher {
	m := &addedMatcher{byFirst: map[byte][]*AddedToken{}}
	for _, t := range tokens {
		if t.Content != "" {
			m.byFirst[t.Content[0]] = append(m.byFirst[t.Content[0]], t)
		}
	}
	for _, ts := range m.byFirst {
		sort.SliceStable(ts, func(i, j int) bool { return len(ts[i].Content) > len(ts[j].Content) })
	}
	return m
}

// piece is a stretch of text, or an added token found in it.
type piece struct {
	text  string
	token *AddedToken
}

// split cuts s at the added tokens it finds, applying single_word, lstrip and rstrip.
func (m *addedMatcher) split(s string) []piece {
	if len(m.byFirst) == 0 {
		return []piece{{text: s}}
	}
	var out []piece
	done := 0 // end of the last token taken
	for i := 0; i < len(s); {
		t := m.at(s, i)
		if t == nil {
			i++
			continue
		}
		begin, end := i, i+len(t.Content)
		if t.SingleWord && (endsWithWord(s[:begin]) || startsWithWord(s[end:])) {
			i = end // the match is used up, as in tokenizers' iteration over matches
			continue
		}
		if t.LStrip {
			begin = max(len(strings.TrimRightFunc(s[:begin], unicode.IsSpace)), done)
		}
		if t.RStrip {
			end = len(s) - len(strings.TrimLeftFunc(s[end:], unicode.IsSpace))
		}
		if done < begin {
			out = append(out, piece{text: s[done:begin]})
		}
		out = append(out, piece{text: s[begin:end], token: t})
		done, i = end, end
	}
	if done < len(s) {
		out = append(out, piece{text: s[done:]})
	}
	return out
}

func (m *addedMatcher) at(s string, i int) *AddedToken {
	for _, t := range m.byFirst[s[i]] {
		if strings.HasPrefix(s[i:], t.Content) {
			return t
		}
	}
	return nil
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func endsWithWord(s string) bool {
	r, n := utf8.DecodeLastRuneInString(s)
	return n > 0 && isWordRune(r)
}

func startsWithWord(s string) bool {
	r, n := utf8.DecodeRuneInString(s)
	return n > 0 && isWordRune(r)
}
