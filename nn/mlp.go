package nn

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/vk"
)

// GatedMLP is down(silu(gate(x)) * up(x)), LLaMA's and Doge's MLP.
type GatedMLP struct {
	Gate, Up, Down *Linear
}

// NewGatedMLP uploads the three projections ([inter, hidden], [inter, hidden],
// [hidden, inter]; biases may be nil).
func (n *Device) NewGatedMLP(ctx context.Context, gate, up, down, gateBias, upBias, downBias *Array) (*GatedMLP, error) {
	m := &GatedMLP{}
	var err error
	for _, l := range []struct {
		dst  **Linear
		w, b *Array
	}{{&m.Gate, gate, gateBias}, {&m.Up, up, upBias}, {&m.Down, down, downBias}} {
		if *l.dst, err = n.NewLinear(ctx, l.w, l.b); err != nil {
			m.Close()
			return nil, err
		}
	}
	if m.Gate.In != m.Up.In || m.Gate.Out != m.Up.Out || m.Down.In != m.Gate.Out || m.Down.Out != m.Gate.In {
		m.Close()
		return nil, fmt.Errorf("nn: NewGatedMLP: gate %dx%d, up %dx%d, down %dx%d do not chain", m.Gate.Out, m.Gate.In, m.Up.Out, m.Up.In, m.Down.Out, m.Down.In)
	}
	return m, nil
}

// Close frees the projections.
func (m *GatedMLP) Close() error {
	for _, l := range []*Linear{m.Gate, m.Up, m.Down} {
		if l != nil {
			l.Close()
		}
	}
	return nil
}

// MLPBuffers are the intermediates of t rows.
type MLPBuffers struct {
	G, U    *Tensor // [t, inter] float32
	Scratch *Tensor
}

// NewBuffers allocates the intermediates of up to t rows.
func (m *GatedMLP) NewBuffers(n *Device, t int) (*MLPBuffers, error) {
	b := &MLPBuffers{}
	s := max(1, LinearsScratchElems(t, m.Gate, m.Up), m.Down.ScratchElems(t))
	var err error
	for _, x := range []struct {
		dst        **Tensor
		rows, cols int
	}{{&b.G, t, m.Gate.Out}, {&b.U, t, m.Gate.Out}, {&b.Scratch, 1, s}} {
		if *x.dst, err = n.NewTensor(dma.Float32, x.rows, x.cols); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// Close frees the buffers.
func (b *MLPBuffers) Close() error {
	for _, t := range []*Tensor{b.G, b.U, b.Scratch} {
		if t != nil {
			t.Close()
		}
	}
	return nil
}

// Record records y = down(silu(gate(x)) * up(x)) for x's rows (float32; y must not be
// x).
func (m *GatedMLP) Record(n *Device, r *vk.Recorder, y, x *Tensor, b *MLPBuffers) error {
	g, err := b.G.Slice(0, x.Rows)
	if err != nil {
		return err
	}
	u, _ := b.U.Slice(0, x.Rows)
	if err := RecordLinears(r, b.Scratch, LinearJob{m.Gate, g, x}, LinearJob{m.Up, u, x}); err != nil {
		return err
	}
	if err := n.RecordSiLUMul(r, g, g, u); err != nil {
		return err
	}
	return m.Down.Record(r, y, g, b.Scratch)
}

// FusesResidual reports whether RecordResidualNorm of m rows saves passes: at most 4
// rows, no bias on the down projection.
func (m *GatedMLP) FusesResidual(rows int) bool { return m.Down.FusesResidual(rows) }

// RecordResidualNorm records x = g * x + down(silu(gate(in)) * up(in)) and then
// y = weight * x / sqrt(mean(x^2) + eps): the activation formed as the down projection
// reads its input, and its partial sums added by the residual pass (FusesResidual must
// hold). in may be y (it is read first), not x.
func (m *GatedMLP) RecordResidualNorm(n *Device, r *vk.Recorder, x, in *Tensor, g *Vector, y *Tensor, weight *Vector, eps float32, b *MLPBuffers) error {
	gt, err := b.G.Slice(0, in.Rows)
	if err != nil {
		return err
	}
	ut, _ := b.U.Slice(0, in.Rows)
	if err := RecordLinears(r, b.Scratch, LinearJob{m.Gate, gt, in}, LinearJob{m.Up, ut, in}); err != nil {
		return err
	}
	return m.Down.recordResidualNorm(r, x, gt, ut, g, y, weight, eps, b.Scratch)
}
