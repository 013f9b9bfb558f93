package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

type fileJSON struct {
	AddedTokens []struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Model         json.RawMessage `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
}

// component holds the fields of any normalizer, pre-tokenizer, post-processor or
// decoder; each type reads its own.
type component struct {
	Type string `json:"type"`
	// Sequence
	Normalizers   []json.RawMessage `json:"normalizers"`
	PreTokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`
	// ByteLevel
	AddPrefixSpace *bool `json:"add_prefix_space"`
	UseRegex       *bool `json:"use_regex"`
	// Split, Replace
	Pattern  patternJSON `json:"pattern"`
	Behavior string      `json:"behavior"`
	Invert   bool        `json:"invert"`
	Content  string      `json:"content"`
	// Digits
	IndividualDigits bool `json:"individual_digits"`
	// Strip
	StripLeft  *bool `json:"strip_left"`
	StripRight *bool `json:"strip_right"`
	Start      int   `json:"start"`
	Stop       int   `json:"stop"`
	// Prepend
	Prepend string `json:"prepend"`
	// Metaspace
	Replacement   string `json:"replacement"`
	PrependScheme string `json:"prepend_scheme"`
	Split         *bool  `json:"split"`
	// TemplateProcessing
	Single        []map[string]templatePart `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
	// RobertaProcessing, BertProcessing: [token, id]
	Sep []any `json:"sep"`
	Cls []any `json:"cls"`
}

type templatePart struct {
	ID string `json:"id"`
}

type modelJSON struct {
	Type                    string          `json:"type"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	Dropout                 *float64        `json:"dropout"`
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

func parseComponent(raw json.RawMessage, what string) (*component, error) {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return &c, nil
}

// Parse reads the contents of a tokenizer.json.
func Parse(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if isNull(f.Model) {
		return nil, fmt.Errorf("no model")
	}
	var kind struct {
		Type   string          `json:"type"`
		Merges json.RawMessage `json:"merges"`
	}
	if err := json.Unmarshal(f.Model, &kind); err != nil {
		return nil, fmt.Errorf("model: %v", err)
	}
	if kind.Type != "BPE" && !(kind.Type == "" && kind.Merges != nil) {
		return nil, fmt.Errorf("model type %q is not supported (BPE)", kind.Type)
	}
	var m modelJSON
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, fmt.Errorf("model: %v", err)
	}
	if m.Dropout != nil && *m.Dropout > 0 {
		return nil, fmt.Errorf("BPE dropout %v is not supported", *m.Dropout)
	}
	merges, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	t := &Tokenizer{tokenToID: map[string]int{}, addedByStr: map[string]*AddedToken{}}
	if t.model, err = newBPE(m.Vocab, merges, deref(m.UnkToken), m.FuseUnk, m.ByteFallback, m.IgnoreMerges,
		deref(m.ContinuingSubwordPrefix), deref(m.EndOfWordSuffix)); err != nil {
		return nil, fmt.Errorf("model: %v", err)
	}
	size := 0
	for tok, id := range m.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("model: token %q has negative id %d", tok, id)
		}
		size = max(size, id+1)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("added token %q with id %d", a.Content, a.ID)
		}
		size = max(size, a.ID+1)
	}
	t.idToToken = make([]string, size)
	t.special = make([]bool, size)
	t.assigned = make([]bool, size)
	for tok, id := range m.Vocab {
		t.idToToken[id], t.assigned[id] = tok, true
		t.tokenToID[tok] = id
	}
	var raw, norm []*AddedToken
	for _, a := range f.AddedTokens {
		at := &AddedToken{ID: a.ID, Content: a.Content, SingleWord: a.SingleWord, LStrip: a.LStrip, RStrip: a.RStrip, Normalized: a.Normalized, Special: a.Special}
		t.added = append(t.added, at)
		t.idToToken[a.ID], t.assigned[a.ID] = a.Content, true
		t.tokenToID[a.Content] = a.ID
		t.special[a.ID] = a.Special
		t.addedByStr[a.Content] = at
		if a.Normalized {
			norm = append(norm, at)
		} else {
			raw = append(raw, at)
		}
	}
	t.rawAdded, t.normAdded = newAddedMatcher(raw), newAddedMatcher(norm)
	if !isNull(f.Normalizer) {
		if t.normalize, err = buildNormalizer(f.Normalizer); err != nil {
			return nil, err
		}
	}
	if !isNull(f.PreTokenizer) {
		if t.preTok, err = buildPreTokenizer(f.PreTokenizer); err != nil {
			return nil, err
		}
	}
	if !isNull(f.PostProcessor) {
		if t.post, err = t.buildPost(f.PostProcessor); err != nil {
			return nil, err
		}
	}
	if !isNull(f.Decoder) {
		if t.decode, err = buildDecoder(f.Decoder); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// parseMerges reads merges as "a b" strings (older files) or [a, b] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merge %d %q is not two tokens", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("merges: %v", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("merge %d %q is not two tokens", i, p)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

func buildNormalizer(raw json.RawMessage) (normalizer, error) {
	c, err := parseComponent(raw, "normalizer")
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var ns []normalizer
		for _, r := range c.Normalizers {
			n, err := buildNormalizer(r)
			if err != nil {
				return nil, err
			}
			ns = append(ns, n)
		}
		return sequenceNormalizer(ns), nil
	case "NFC", "NFD", "NFKC", "NFKD":
		return unicodeNormalizer(c.Type)
	case "Lowercase":
		return lowercase, nil
	case "StripAccents":
		return stripAccents, nil
	case "Strip":
		return stripNormalizer(c.StripLeft == nil || *c.StripLeft, c.StripRight == nil || *c.StripRight), nil
	case "Prepend":
		return prependNormalizer(c.Prepend), nil
	case "Replace":
		p, err := newPattern(c.Pattern)
		if err != nil {
			return nil, fmt.Errorf("normalizer Replace: %v", err)
		}
		return func(s string) string { return p.replaceAll(s, c.Content) }, nil
	}
	return nil, unknownType("normalizer", c.Type)
}

func buildPreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	c, err := parseComponent(raw, "pre_tokenizer")
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var ps []preTokenizer
		for _, r := range c.PreTokenizers {
			p, err := buildPreTokenizer(r)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
		return sequencePreTokenizer(ps), nil
	case "ByteLevel":
		return byteLevelPreTokenizer(c.AddPrefixSpace == nil || *c.AddPrefixSpace, c.UseRegex == nil || *c.UseRegex), nil
	case "Split":
		p, err := newPattern(c.Pattern)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %v", err)
		}
		if !splitBehaviors[c.Behavior] {
			return nil, fmt.Errorf("pre_tokenizer Split: behavior %q", c.Behavior)
		}
		return splitPreTokenizer(p, c.Behavior, c.Invert), nil
	case "Digits":
		return digitsPreTokenizer(c.IndividualDigits), nil
	case "Metaspace":
		rep, scheme := c.Replacement, c.PrependScheme
		if rep == "" {
			rep = "\u2581"
		}
		if scheme == "" { // older files: add_prefix_space
			scheme = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				scheme = "never"
			}
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, fmt.Errorf("pre_tokenizer Metaspace: prepend_scheme %q", scheme)
		}
		return metaspacePreTokenizer(rep, scheme, c.Split == nil || *c.Split), nil
	}
	return nil, unknownType("pre_tokenizer", c.Type)
}

func buildDecoder(raw json.RawMessage) (decoder, error) {
	c, err := parseComponent(raw, "decoder")
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var ds []decoder
		for _, r := range c.Decoders {
			d, err := buildDecoder(r)
			if err != nil {
				return nil, err
			}
			ds = append(ds, d)
		}
		return sequenceDecoder(ds), nil
	case "ByteLevel":
		return byteLevelDecoder, nil
	case "ByteFallback":
		return byteFallbackDecoder, nil
	case "Fuse":
		return fuseDecoder, nil
	case "Replace":
		p, err := newPattern(c.Pattern)
		if err != nil {
			return nil, fmt.Errorf("decoder Replace: %v", err)
		}
		return replaceDecoder(p, c.Content), nil
	case "Strip":
		return stripDecoder(c.Content, c.Start, c.Stop), nil
	case "Metaspace":
		rep := c.Replacement
		if rep == "" {
			rep = "\u2581"
		}
		prepended := c.PrependScheme != "never"
		if c.PrependScheme == "" && c.AddPrefixSpace != nil { // older files
			prepended = *c.AddPrefixSpace
		}
		return metaspaceDecoder(rep, prepended), nil
	}
	return nil, unknownType("decoder", c.Type)
}

// postProcessor adds the special tokens of a single sequence.
type postProcessor func(ids []int) []int

func (t *Tokenizer) buildPost(raw json.RawMessage) (postProcessor, error) {
	c, err := parseComponent(raw, "post_processor")
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var ps []postProcessor
		for _, r := range c.Processors {
			p, err := t.buildPost(r)
			if err != nil {
				return nil, err
			}
			if p != nil {
				ps = append(ps, p)
			}
		}
		return func(ids []int) []int {
			for _, p := range ps {
				ids = p(ids)
			}
			return ids
		}, nil
	case "ByteLevel":
		return nil, nil // offsets only
	case "TemplateProcessing":
		var parts [][]int // nil entry: the sequence
		for _, item := range c.Single {
			switch {
			case item["Sequence"].ID != "":
				if item["Sequence"].ID != "A" {
					return nil, fmt.Errorf("post_processor TemplateProcessing: single sequence %q is not A", item["Sequence"].ID)
				}
				parts = append(parts, nil)
			case item["SpecialToken"].ID != "":
				st, ok := c.SpecialTokens[item["SpecialToken"].ID]
				if !ok {
					return nil, fmt.Errorf("post_processor TemplateProcessing: special token %q is not defined", item["SpecialToken"].ID)
				}
				parts = append(parts, append([]int{}, st.IDs...))
			default:
				return nil, fmt.Errorf("post_processor TemplateProcessing: single item %v", item)
			}
		}
		return func(ids []int) []int {
			var out []int
			for _, p := range parts {
				if p == nil {
					out = append(out, ids...)
				} else {
					out = append(out, p...)
				}
			}
			return out
		}, nil
	case "RobertaProcessing", "BertProcessing":
		cls, err1 := pairID(c.Cls)
		sep, err2 := pairID(c.Sep)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("post_processor %s: cls %v, sep %v", c.Type, c.Cls, c.Sep)
		}
		return func(ids []int) []int { return append(append([]int{cls}, ids...), sep) }, nil
	}
	return nil, unknownType("post_processor", c.Type)
}

// pairID reads the id of a [token, id] pair.
func pairID(p []any) (int, error) {
	if len(p) != 2 {
		return 0, fmt.Errorf("not a pair")
	}
	f, ok := p[1].(float64)
	if !ok {
		return 0, fmt.Errorf("not an id")
	}
	return int(f), nil
}
