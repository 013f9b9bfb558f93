package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns token strings back into text pieces (tokenizers' decode_chain); the
// pieces are then joined.
type decoder func(tokens []string) []string

func sequenceDecoder(ds []decoder) decoder {
	return func(tokens []string) []string {
		for _, d := range ds {
			tokens = d(tokens)
		}
		return tokens
	}
}

// byteLevelDecoder maps GPT-2's characters back to bytes; a token with a character
// outside the table (an added token, say) gives its own UTF-8 bytes.
func byteLevelDecoder(tokens []string) []string {
	var b []byte
	for _, t := range tokens {
		start := len(b)
		for _, r := range t {
			c, ok := runeToByte[r]
			if !ok {
				b = append(b[:start], t...)
				break
			}
			b = append(b, c)
		}
	}
	return []string{lossyUTF8(b)}
}

// byteFallbackDecoder turns runs of <0xXX> tokens into text, or into one U+FFFD per
// byte when the run is not UTF-8.
func byteFallbackDecoder(tokens []string) []string {
	var out []string
	var run []byte
	flush := func(n int) {
		if n == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			out = append(out, strings.Repeat("\uFFFD", n))
		}
		run = run[:0]
	}
	n := 0
	for _, t := range tokens {
		if len(t) == 6 && strings.HasPrefix(t, "<0x") && t[5] == '>' {
			if v, err := strconv.ParseUint(t[3:5], 16, 8); err == nil {
				run = append(run, byte(v))
				n++
				continue
			}
		}
		flush(n)
		n = 0
		out = append(out, t)
	}
	flush(n)
	return out
}

func fuseDecoder(tokens []string) []string { return []string{strings.Join(tokens, "")} }

func replaceDecoder(p *pattern, with string) decoder {
	return func(tokens []string) []string {
		out := make([]string, len(tokens))
		for i, t := range tokens {
			out[i] = p.replaceAll(t, with)
		}
		return out
	}
}

// stripDecoder removes up to start leading and stop trailing copies of content from
// every token.
func stripDecoder(content string, start, stop int) decoder {
	return func(tokens []string) []string {
		out := make([]string, len(tokens))
		for i, t := range tokens {
			for n := 0; n < start && strings.HasPrefix(t, content); n++ {
				t = t[len(content):]
			}
			for n := 0; n < stop && strings.HasSuffix(t, content); n++ {
				t = t[:len(t)-len(content)]
			}
			out[i] = t
		}
		return out
	}
}

// metaspaceDecoder turns the replacement character back into spaces, except in the
// first token, where it only stood for the space the pre-tokenizer put before the text
// (unless its prepend_scheme is never): tokenizers drops it there.
func metaspaceDecoder(replacement string, prepended bool) decoder {
	return func(tokens []string) []string {
		out := make([]string, len(tokens))
		for i, t := range tokens {
			with := " "
			if i == 0 && prepended {
				with = ""
			}
			out[i] = strings.ReplaceAll(t, replacement, with)
		}
		return out
	}
}
