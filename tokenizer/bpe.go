package tokenizer

import (
	"container/heap"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// bpe is tokenizers' BPE model: a word starts as its characters and merges the adjacent
// pair of lowest rank until none is left.
type bpe struct {
	vocab        map[string]int
	merges       map[[2]int]merge
	unk          int // -1: none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool   // a word in the vocabulary is one token, whatever the merges
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix

	mu    sync.Mutex
	cache map[string][]int
}

type merge struct{ rank, id int }

const maxCache = 1 << 16

func newBPE(vocab map[string]int, merges [][2]string, unk string, fuseUnk, byteFallback, ignoreMerges bool, prefix, suffix string) (*bpe, error) {
	b := &bpe{vocab: vocab, merges: make(map[[2]int]merge, len(merges)), unk: -1, fuseUnk: fuseUnk,
		byteFallback: byteFallback, ignoreMerges: ignoreMerges, prefix: prefix, suffix: suffix, cache: map[string][]int{}}
	if unk != "" {
		id, ok := vocab[unk]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", unk)
		}
		b.unk = id
	}
	for rank, m := range merges {
		a, ok1 := vocab[m[0]]
		c, ok2 := vocab[m[1]]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("merge %d (%q %q): a part is not in the vocabulary", rank, m[0], m[1])
		}
		joined := m[0] + strings.TrimPrefix(m[1], prefix)
		id, ok := vocab[joined]
		if !ok {
			return nil, fmt.Errorf("merge %d (%q %q): %q is not in the vocabulary", rank, m[0], m[1], joined)
		}
		if _, dup := b.merges[[2]int{a, c}]; !dup {
			b.merges[[2]int{a, c}] = merge{rank, id}
		}
	}
	return b, nil
}

// tokenize appends the ids of one pre-tokenized word.
func (b *bpe) tokenize(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if b.ignoreMerges {
		if id, ok := b.vocab[word]; ok {
			return append(dst, id)
		}
	}
	b.mu.Lock()
	ids, ok := b.cache[word]
	b.mu.Unlock()
	if ok {
		return append(dst, ids...)
	}
	ids = b.merge(b.symbols(word))
	b.mu.Lock()
	if len(b.cache) >= maxCache {
		clear(b.cache)
	}
	b.cache[word] = ids
	b.mu.Unlock()
	return append(dst, ids...)
}

// symbols is the word's starting symbols: its characters (with the subword prefix and
// word suffix), bytes where a character is unknown and byte_fallback is on, else unk.
func (b *bpe) symbols(word string) []int {
	var ids []int
	lastUnk := false
	for i, r := range word {
		s := string(r)
		if i > 0 && b.prefix != "" {
			s = b.prefix + s
		}
		if i+utf8.RuneLen(r) == len(word) && b.suffix != "" {
			s += b.suffix
		}
		if id, ok := b.vocab[s]; ok {
			ids, lastUnk = append(ids, id), false
			continue
		}
		if b.byteFallback {
			var bs []int
			for _, c := range []byte(string(r)) {
				id, ok := b.vocab[fmt.Sprintf("<0x%02X>", c)]
				if !ok {
					bs = nil
					break
				}
				bs = append(bs, id)
			}
			if bs != nil {
				ids, lastUnk = append(ids, bs...), false
				continue
			}
		}
		if b.unk >= 0 {
			if !(b.fuseUnk && lastUnk) {
				ids = append(ids, b.unk)
			}
			lastUnk = true
		}
		// no unk token: the character is dropped, as tokenizers does
	}
	return ids
}

// merge applies the merges, lowest rank first and leftmost among equal ranks, with a
// heap over the adjacent pairs as tokenizers does (a word can be a long run of letters).
func (b *bpe) merge(ids []int) []int {
	if len(ids) < 2 {
		return ids
	}
	n := len(ids)
	prev, next := make([]int, n), make([]int, n)
	gone := make([]bool, n)
	for i := range ids {
		prev[i], next[i] = i-1, i+1
	}
	next[n-1] = -1
	h := &pairHeap{}
	push := func(pos, right int) {
		if m, ok := b.merges[[2]int{ids[pos], ids[right]}]; ok {
			heap.Push(h, pairAt{m.rank, pos, m.id})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(i, i+1)
	}
	for h.Len() > 0 {
		top := heap.Pop(h).(pairAt)
		if gone[top.pos] || next[top.pos] < 0 {
			continue
		}
		r := next[top.pos]
		if m, ok := b.merges[[2]int{ids[top.pos], ids[r]}]; !ok || m.id != top.id {
			continue // the pair there has changed since
		}
		ids[top.pos], gone[r] = top.id, true
		next[top.pos] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = top.pos
		}
		if p := prev[top.pos]; p >= 0 {
			push(p, top.pos)
		}
		if nx := next[top.pos]; nx >= 0 {
			push(top.pos, nx)
		}
	}
	out := ids[:0]
	for i := 0; i >= 0; i = next[i] {
		out = append(out, ids[i])
	}
	return out
}

// pairAt is a mergeable pair: its merge's rank, its left symbol's position, the result.
type pairAt struct{ rank, pos, id int }

type pairHeap []pairAt

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairAt)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
