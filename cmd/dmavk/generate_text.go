package main

import "fmt"

// textCodec turns text into token ids and ids back into text, piece by piece.
type textCodec interface {
	Encode(text string) ([]int, error)
	// Stream returns a decoder for one sequence: each call takes the next id and returns
	// the text it completes ("" while its bytes end mid-character).
	Stream() func(id int) string
}

// loadTokenizer reads a tokenizer.json.
func loadTokenizer(path string) (textCodec, error) {
	return nil, fmt.Errorf("%s: no tokenizer in this build: give --prompt-ids", path)
}
