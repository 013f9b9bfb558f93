package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
)

// preTokenizer cuts pieces of text into smaller ones; BPE then runs on each alone.
type preTokenizer func(pieces []string) []string

func sequencePreTokenizer(ps []preTokenizer) preTokenizer {
	return func(pieces []string) []string {
		for _, p := range ps {
			pieces = p(pieces)
		}
		return pieces
	}
}

// The pattern GPT-2's ByteLevel pre-tokenizer splits with (use_regex).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// byteLevelPreTokenizer adds a space before each piece that lacks one
// (add_prefix_space), splits with GPT-2's pattern (use_regex), and maps the bytes of
// every piece to GPT-2's characters.
func byteLevelPreTokenizer(addPrefixSpace, useRegex bool) preTokenizer {
	var split preTokenizer
	if useRegex {
		re := gpt2Pattern
		p, err := newPattern(patternJSON{Regex: &re})
		if err != nil {
			panic(err) // a constant pattern
		}
		split = splitPreTokenizer(p, "Isolated", false)
	}
	return func(pieces []string) []string {
		if addPrefixSpace {
			for i, s := range pieces {
				if !strings.HasPrefix(s, " ") {
					pieces[i] = " " + s
				}
			}
		}
		if split != nil {
			pieces = split(pieces)
		}
		for i, s := range pieces {
			pieces[i] = byteLevel(s)
		}
		return pieces
	}
}

var splitBehaviors = map[string]bool{"Removed": true, "Isolated": true, "MergedWithPrevious": true, "MergedWithNext": true, "Contiguous": true}

// splitPreTokenizer cuts each piece at the pattern's matches, which are dropped
// (Removed), kept alone (Isolated), joined to the piece before or after
// (MergedWithPrevious, MergedWithNext), or kept with runs of matches joined
// (Contiguous). With invert the matches are the pieces and the gaps the delimiters.
func splitPreTokenizer(p *pattern, behavior string, invert bool) preTokenizer {
	return func(pieces []string) []string {
		var out []string
		for _, s := range pieces {
			sp := p.spans(s)
			if invert {
				for i := range sp {
					sp[i].match = !sp[i].match
				}
			}
			for _, x := range applyBehavior(sp, behavior) {
				if x.end > x.begin {
					out = append(out, s[x.begin:x.end])
				}
			}
		}
		return out
	}
}

// applyBehavior turns matches and gaps into the pieces to keep (tokenizers' split).
func applyBehavior(sp []span, behavior string) []span {
	var acc []span
	switch behavior {
	case "Removed":
		for _, x := range sp {
			if !x.match {
				acc = append(acc, x)
			}
		}
	case "Isolated":
		acc = sp
	case "Contiguous":
		prev := false
		for _, x := range sp {
			if x.match == prev && len(acc) > 0 {
				acc[len(acc)-1].end = x.end
			} else {
				acc = append(acc, span{x.begin, x.end, false})
			}
			prev = x.match
		}
	case "MergedWithPrevious":
		prev := false
		for _, x := range sp {
			if x.match && !prev && len(acc) > 0 {
				acc[len(acc)-1].end = x.end
			} else {
				acc = append(acc, span{x.begin, x.end, false})
			}
			prev = x.match
		}
	case "MergedWithNext":
		prev := false
		for i := len(sp) - 1; i >= 0; i-- {
			x := sp[i]
			if x.match && !prev && len(acc) > 0 {
				acc[len(acc)-1].begin = x.begin
			} else {
				acc = append(acc, span{x.begin, x.end, false})
			}
			prev = x.match
		}
		for i, j := 0, len(acc)-1; i < j; i, j = i+1, j-1 {
			acc[i], acc[j] = acc[j], acc[i]
		}
	}
	return acc
}

// digitsPreTokenizer keeps runs of digits (or each digit alone) apart from the rest.
func digitsPreTokenizer(individual bool) preTokenizer {
	behavior := "Contiguous"
	if individual {
		behavior = "Isolated"
	}
	return func(pieces []string) []string {
		var out []string
		for _, s := range pieces {
			// each digit a match, each run of other characters one gap
			var sp []span
			for i, r := range s {
				d := unicode.IsNumber(r)
				if n := len(sp); n > 0 && !d && !sp[n-1].match {
					sp[n-1].end = i + len(string(r))
					continue
				}
				sp = append(sp, span{i, i + len(string(r)), d})
			}
			for _, x := range applyBehavior(sp, behavior) {
				if x.end > x.begin {
					out = append(out, s[x.begin:x.end])
				}
			}
		}
		return out
	}
}

func unknownType(kind, typ string) error { return fmt.Errorf("%s type %q is not supported", kind, typ) }
