// Package tokenizer reads Hugging Face tokenizer.json files (the fast tokenizers of the
// tokenizers library) and encodes and decodes text with them, giving the ids tokenizers
// gives: BPE with its normalizer, pre-tokenizer (ByteLevel, Split with Oniguruma-style
// patterns, Metaspace, Digits, Sequence), post-processor (TemplateProcessing, RobertaProcessing,
// BertProcessing, ByteLevel) and decoder (ByteLevel, ByteFallback, Fuse, Replace, Strip,
// Metaspace), and added and special tokens. Components it does not know are an error
// when the file is read, never a silently different tokenization.
package tokenizer

import (
	"fmt"
	"os"
	"strings"
)

// Tokenizer encodes text to token ids and back. It is safe for concurrent use.
type Tokenizer struct {
	model      *bpe
	normalize  normalizer   // nil: none
	preTok     preTokenizer // nil: none
	post       postProcessor
	decode     decoder // nil: tokens joined with spaces
	rawAdded   *addedMatcher
	normAdded  *addedMatcher
	added      []*AddedToken
	idToToken  []string
	assigned   []bool // ids with a token: vocabularies may leave holes
	special    []bool
	tokenToID  map[string]int
	addedByStr map[string]*AddedToken
}

// Load reads a tokenizer.json.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// Encode returns the ids of text; with addSpecialTokens the post-processor adds its
// special tokens (a BOS, say), as tokenizers' encode(text, add_special_tokens=True).
// Special tokens written in the text are recognized as such. Invalid UTF-8 in text reads
// as U+FFFD.
func (t *Tokenizer) Encode(text string, addSpecialTokens bool) []int {
	text = strings.ToValidUTF8(text, "\uFFFD")
	var ids []int
	for i, p := range t.rawAdded.split(text) {
		if p.token != nil {
			ids = append(ids, p.token.ID)
			continue
		}
		s := p.text
		if t.normalize != nil {
			s = t.normalize(s)
		}
		for j, q := range t.normAdded.split(s) {
			if q.token != nil {
				ids = append(ids, q.token.ID)
				continue
			}
			words := []string{q.text}
			if t.preTok != nil {
				words, _ = t.preTok(words, i == 0 && j == 0)
			}
			for _, w := range words {
				ids = t.model.tokenize(ids, w)
			}
		}
	}
	if addSpecialTokens && t.post != nil {
		ids = t.post(ids)
	}
	return ids
}

// Tokens returns the token strings of ids (GPT-2's byte characters for byte-level BPE).
func (t *Tokenizer) Tokens(ids []int) ([]string, error) {
	out := make([]string, len(ids))
	for i, id := range ids {
		s, ok := t.IDToToken(id)
		if !ok {
			return nil, fmt.Errorf("tokenizer: id %d (at %d) is not in the vocabulary of %d", id, i, len(t.idToToken))
		}
		out[i] = s
	}
	return out, nil
}

// Decode returns the text of ids; skipSpecialTokens leaves out the special added tokens.
// Bytes that do not form UTF-8 read as U+FFFD. An id outside the vocabulary is an error.
func (t *Tokenizer) Decode(ids []int, skipSpecialTokens bool) (string, error) {
	toks := make([]string, 0, len(ids))
	for i, id := range ids {
		s, ok := t.IDToToken(id)
		if !ok {
			return "", fmt.Errorf("tokenizer: id %d (at %d) is not in the vocabulary of %d", id, i, len(t.idToToken))
		}
		if skipSpecialTokens && t.special[id] {
			continue
		}
		toks = append(toks, s)
	}
	if t.decode == nil {
		return strings.Join(toks, " "), nil
	}
	return strings.Join(t.decode(toks), ""), nil
}

// TokenToID returns the id of a token string (an added token or a vocabulary entry).
func (t *Tokenizer) TokenToID(token string) (int, bool) {
	id, ok := t.tokenToID[token]
	return id, ok
}

// IDToToken returns the token string of id.
func (t *Tokenizer) IDToToken(id int) (string, bool) {
	if id < 0 || id >= len(t.idToToken) || !t.assigned[id] {
		return "", false
	}
	return t.idToToken[id], true
}

// VocabSize is one more than the largest id, added tokens included.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// AddedTokens lists the added tokens, special or not.
func (t *Tokenizer) AddedTokens() []AddedToken {
	out := make([]AddedToken, len(t.added))
	for i, a := range t.added {
		out[i] = *a
	}
	return out
}

func (t *Tokenizer) isAdded(id int) bool {
	s, ok := t.IDToToken(id)
	return ok && t.addedByStr[s] != nil && t.addedByStr[s].ID == id
}

// IsSpecial reports whether id is a special added token.
func (t *Tokenizer) IsSpecial(id int) bool { return id >= 0 && id < len(t.special) && t.special[id] }

// StreamDecoder turns ids, one at a time, into text as soon as it is complete: a
// character split over several tokens comes out whole with the last of them. It gives
// what tokenizers' DecodeStream gives. It is not safe for concurrent use.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	ids         []int
	prefix      string
	prefixIndex int
}

// NewStreamDecoder starts a stream.
func (t *Tokenizer) NewStreamDecoder(skipSpecialTokens bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecialTokens}
}

// Next takes one id and returns the text it completes; ok is false while the text so
// far ends inside a character (or adds nothing). Like tokenizers', it also holds back a
// text that ends in U+FFFD itself until a later id.
func (d *StreamDecoder) Next(id int) (text string, ok bool, err error) {
	d.ids = append(d.ids, id)
	s, err := d.t.Decode(d.ids, d.skipSpecial)
	if err != nil {
		d.ids = d.ids[:len(d.ids)-1]
		return "", false, err
	}
	if len(s) <= len(d.prefix) || strings.HasSuffix(s, "\uFFFD") {
		return "", false, nil
	}
	if !strings.HasPrefix(s, d.prefix) {
		return "", false, fmt.Errorf("tokenizer: stream: the text of the ids so far no longer begins with the text before")
	}
	text = s[len(d.prefix):]
	newIndex := len(d.ids) - d.prefixIndex
	d.ids = append([]int(nil), d.ids[d.prefixIndex:]...)
	if d.prefix, err = d.t.Decode(d.ids, d.skipSpecial); err != nil {
		return "", false, err
	}
	d.prefixIndex = newIndex
	return text, true, nil
}
