package tokenizer

import (
	"fmt"
	"strings"

	"github.com/dlclark/regexp2"
)

// pattern finds the matches of a Split pre-tokenizer's or a Replace's pattern. Tokenizer
// patterns are Oniguruma regular expressions with lookaheads (GPT-2's \s+(?!\S)), which
// Go's regexp cannot express; regexp2 (backtracking, .NET syntax) matches them the way
// Oniguruma does.
type pattern struct {
	literal string
	re      *regexp2.Regexp
}

type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func newPattern(p patternJSON) (*pattern, error) {
	switch {
	case p.String != nil:
		if *p.String == "" {
			return nil, fmt.Errorf("empty pattern")
		}
		return &pattern{literal: *p.String}, nil
	case p.Regex != nil:
		re, err := regexp2.Compile(*p.Regex, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %v", *p.Regex, err)
		}
		return &pattern{re: re}, nil
	}
	return nil, fmt.Errorf("pattern has neither String nor Regex")
}

// span is a byte range of a piece and whether it is a match of the pattern.
type span struct {
	begin, end int
	match      bool
}

// spans cuts s into matches and the gaps between them, in order, covering all of s.
func (p *pattern) spans(s string) []span {
	var out []span
	prev := 0
	add := func(b, e int) {
		if prev != b {
			out = append(out, span{prev, b, false})
		}
		out = append(out, span{b, e, true})
		prev = e
	}
	if p.re == nil {
		for i := 0; i < len(s); {
			j := strings.Index(s[i:], p.literal)
			if j < 0 {
				break
			}
			add(i+j, i+j+len(p.literal))
			i += j + len(p.literal)
		}
	} else {
		runes := []rune(s)
		// byte offset of each rune index
		off := make([]int, len(runes)+1)
		for i, r := range runes {
			off[i+1] = off[i] + len(string(r))
		}
		m, err := p.re.FindRunesMatch(runes)
		for ; m != nil && err == nil; m, err = p.re.FindNextMatch(m) {
			add(off[m.Index], off[m.Index+m.Length])
		}
	}
	if prev != len(s) {
		out = append(out, span{prev, len(s), false})
	}
	return out
}

func (p *pattern) replaceAll(s, with string) string {
	if p.re == nil {
		return strings.ReplaceAll(s, p.literal, with)
	}
	var b strings.Builder
	prev := 0
	for _, sp := range p.spans(s) {
		if sp.match {
			b.WriteString(s[prev:sp.begin])
			b.WriteString(with)
			prev = sp.end
		}
	}
	b.WriteString(s[prev:])
	return b.String()
}
