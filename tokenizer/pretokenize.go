package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
)

// preTokenizer cuts pieces of text into smaller ones; BPE then runs on each alone.
// atStart says that pieces[0] begins the text (Metaspace's prepend_scheme "first" needs
// it); the result says the same of the pieces returned.
type preTokenizer func(pieces []string, atStart bool) ([]string, bool)

func sequencePreTokenizer(ps []preTokenizer) preTokenizer {
	return func(pieces []string, atStart bool) ([]string, bool) {
		for _, p := range ps {
			pieces, atStart = p(pieces, atStart)
		}
		return pieces, atStart
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
	return func(pieces []string, atStart bool) ([]string, bool) {
		if addPrefixSpace {
			for i, s := range pieces {
				if !strings.HasPrefix(s, " ") {
					pieces[i] = " " + s
				}
			}
		}
		if split != nil {
			pieces, atStart = split(pieces, atStart)
		}
		for i, s := range pieces {
			pieces[i] = byteLevel(s)
		}
		return pieces, atStart
	}
}

var splitBehaviors = map[string]bool{"Removed": true, "Isolated": true, "MergedWithPrevious": true, "MergedWithNext": true, "Contiguous": true}

// splitPreTokenizer cuts each piece at the pattern's matches, which are dropped
// (Removed), kept alone (Isolated), joined to the piece before or after
// (MergedWithPrevious, MergedWithNext), or kept with runs of matches joined
// (Contiguous). With invert the matches are the pieces and the gaps the delimiters.
func splitPreTokenizer(p *pattern, behavior string, invert bool) preTokenizer {
	return func(pieces []string, atStart bool) ([]string, bool) {
		var out []string
		for k, s := range pieces {
			sp := p.spans(s)
			if invert {
				for i := range sp {
					sp[i].match = !sp[i].match
				}
			}
			for _, x := range applyBehavior(sp, behavior) {
				if x.end > x.begin {
					if len(out) == 0 {
						atStart = atStart && k == 0 && x.begin == 0
					}
					out = append(out, s[x.begin:x.end])
				}
			}
		}
		return out, atStart && len(out) > 0
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
	return func(pieces []string, atStart bool) ([]string, bool) {
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
		return out, atStart // nothing is removed
	}
}

// metaspacePreTokenizer writes spaces as the replacement character (SentencePiece's
// ▁), puts one before each piece (prepend "always") or before the text's first
// ("first") unless it has one, and with split cuts before every replacement character.
func metaspacePreTokenizer(replacement, prepend string, split bool) preTokenizer {
	return func(pieces []string, atStart bool) ([]string, bool) {
		var out []string
		for k, s := range pieces {
			s = strings.ReplaceAll(s, " ", replacement)
			if !strings.HasPrefix(s, replacement) && (prepend == "always" || prepend == "first" && k == 0 && atStart) {
				s = replacement + s
			}
			if !split {
				out = append(out, s)
				continue
			}
			var sp []span
			prev := 0
			for i := strings.Index(s, replacement); i >= 0; {
				if i > prev {
					sp = append(sp, span{prev, i, false})
				}
				sp = append(sp, span{i, i + len(replacement), true})
				prev = i + len(replacement)
				j := strings.Index(s[prev:], replacement)
				if j < 0 {
					break
				}
				i = prev + j
			}
			if prev < len(s) {
				sp = append(sp, span{prev, len(s), false})
			}
			for _, x := range applyBehavior(sp, "MergedWithNext") {
				if x.end > x.begin {
					out = append(out, s[x.begin:x.end])
				}
			}
		}
		return out, atStart
	}
}

func unknownType(kind, typ string) error { return fmt.Errorf("%s type %q is not supported", kind, typ) }
