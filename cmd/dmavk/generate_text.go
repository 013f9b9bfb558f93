package main

import "github.com/dmavk/dmavk/tokenizer"

// textCodec turns text into token ids and ids back into text, piece by piece.
type textCodec interface {
	Encode(text string) ([]int, error)
	// Stream returns a decoder for one sequence: each call takes the next id and returns
	// the text it completes ("" while its bytes end mid-character).
	Stream() func(id int) string
}

// hfTokenizer is a tokenizer.json: the prompt gets the tokenizer's special tokens (the
// post-processor's BOS), the output is decoded without them.
type hfTokenizer struct{ t *tokenizer.Tokenizer }

// loadTokenizer reads a tokenizer.json.
func loadTokenizer(path string) (textCodec, error) {
	t, err := tokenizer.Load(path)
	if err != nil {
		return nil, err
	}
	return hfTokenizer{t}, nil
}

func (h hfTokenizer) Encode(text string) ([]int, error) { return h.t.Encode(text, true), nil }

func (h hfTokenizer) Stream() func(id int) string {
	d := h.t.NewStreamDecoder(true)
	return func(id int) string {
		s, ok, err := d.Next(id)
		if err != nil || !ok {
			return ""
		}
		return s
	}
}
