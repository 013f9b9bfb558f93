package kern

import (
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// AppendBuffers are the buffers of RecordAppend: the new keys' K and V ([n][Hkv][D], the
// cache's storage, contiguous from offset 0) and float32 weights ([Hb][n]), and the
// cache's K, V and ord.
type AppendBuffers struct {
	K, V, Weights            *vk.Buffer
	CacheK, CacheV, CacheOrd *vk.Buffer
}

// appendGroups bounds the workgroups of kv_append (grid-stride loops): a decode step's
// token needs one; a prefill chunk is copied at memory speed by a few hundred.
const appendGroups = 512

// RecordAppend records shaders/kv_append.comp: p.Lq new keys written into a KV cache at
// key position p.PosOffset: K and V rows to element p.K.Off + PosOffset*p.K.SL of the
// cache's K and V (p.V must equal p.K: one layout), and the kern.Ord of each weight to
// p.OrdOff + hb*p.OrdSL + PosOffset + j. Every position comes from params at run time,
// so one recording appends at any position (repeated decode steps reuse it, as long as
// the other fields keep their values). 16-bit rows may start mid-word.
func (k *Kernels) RecordAppend(r *vk.Recorder, p *Params, params *vk.Buffer, b *AppendBuffers) error {
	const op = "kern: RecordAppend"
	if b == nil || params == nil {
		return fmt.Errorf("%s: nil buffers", op)
	}
	if p.Lq == 0 || p.Hkv == 0 || p.D == 0 || p.Hb == 0 || p.PosOffset < 0 {
		return fmt.Errorf("%s: %d keys of Hkv=%d D=%d Hb=%d at position %d", op, p.Lq, p.Hkv, p.D, p.Hb, p.PosOffset)
	}
	if !p.Storage.Valid() {
		return fmt.Errorf("%s: storage %v", op, p.Storage)
	}
	if p.V != p.K {
		return fmt.Errorf("%s: the cache's K and V views differ", op)
	}
	elems := uint64(p.Lq) * uint64(p.Hkv) * uint64(p.D)
	first := uint64(p.K.Off) + uint64(p.PosOffset)*uint64(p.K.SL)
	if uint64(p.K.SL) < uint64(p.Hkv)*uint64(p.D) {
		return fmt.Errorf("%s: cache rows %d elements apart hold fewer than Hkv*D = %d", op, p.K.SL, p.Hkv*p.D)
	}
	lastOrd := uint64(p.OrdOff) + uint64(p.Hb-1)*uint64(p.OrdSL) + uint64(p.PosOffset) + uint64(p.Lq)
	if first+elems >= 1<<32 || lastOrd >= 1<<32 || uint64(p.Hb)*uint64(p.Lq) >= 1<<32 {
		return fmt.Errorf("%s: offsets over 2^32", op)
	}
	if p.Hb > 1 && uint64(p.OrdSL) < uint64(p.PosOffset)+uint64(p.Lq) {
		return fmt.Errorf("%s: ord rows %d apart, the keys reach %d", op, p.OrdSL, uint64(p.PosOffset)+uint64(p.Lq))
	}
	bytes := func(e uint64) int64 {
		if p.Storage.Packed() {
			return int64((e+1)/2) * 4
		}
		return int64(e) * 4
	}
	if err := checkSizes(op[len("kern: "):],
		sizedBuf{"params", params, ParamsSize},
		sizedBuf{"K", b.K, bytes(elems)}, sizedBuf{"V", b.V, bytes(elems)},
		sizedBuf{"weights", b.Weights, int64(p.Hb) * int64(p.Lq) * 4},
		sizedBuf{"cache K", b.CacheK, bytes(first + elems)}, sizedBuf{"cache V", b.CacheV, bytes(first + elems)},
		sizedBuf{"cache ord", b.CacheOrd, int64(lastOrd) * 4},
	); err != nil {
		return err
	}
	pipe, err := k.Pipeline("kv_append", 7)
	if err != nil {
		return err
	}
	words := (elems + 1) / 2
	if !p.Storage.Packed() {
		words = elems
	}
	groups := uint32(min(max((max(words, uint64(p.Hb)*uint64(p.Lq))+255)/256, 1), appendGroups))
	return r.Dispatch(pipe, [3]uint32{groups, 1, 1}, nil,
		vk.Bind(params), vk.Bind(b.K), vk.Bind(b.V), vk.Bind(b.Weights), vk.Bind(b.CacheK), vk.Bind(b.CacheV), vk.Bind(b.CacheOrd))
}
