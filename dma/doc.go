// Package dma runs Dynamic Mask Attention (DMA) on any Vulkan device: NVIDIA, AMD,
// Intel GPUs, and the CPU through Mesa's lavapipe.
//
// DMA gives every key a weight computed from its value vector; each query keeps only
// the Window best-weighted keys of its causal prefix, and attention runs over those
// keys with the weights added as a bias. The exact function is the project's
// specification (docs/dma-semantics.md); package ref is its float64 reference.
//
// A Device owns the GPU. Tensors live on it: upload once, run many times, download
// what you need. Every shape, stride, dtype and device limit is checked before any
// GPU work, and problems come back as errors, never panics.
//
//	dev, err := dma.Open(dma.Config{})
//	...
//	defer dev.Close()
//	q, _ := dev.NewTensor(dma.Float16, dma.Shape{B: 1, L: 4096, H: 8, D: 128}, dma.BLHD)
//	... upload q, k, v, and the weights (or WeightParams to compute them) ...
//	res, err := dev.Forward(ctx, q, k, v, dma.Options{Window: 2048, Mode: dma.ModeRow, Causal: true, Weights: w})
//	out, err := res.O.Download(ctx)
//
// For training, Backward takes the arguments and Result of a Forward call and dO, and
// returns the gradients of q, k, v, of the weights and of WeightParams (float32,
// whatever the storage dtype), optionally bit-identical from run to run
// (BackwardOptions.Deterministic).
//
// For generation one token at a time, a KVCache keeps the keys, values and weights of a
// few sequences on the device: Append adds the new keys (their weights computed once),
// Attend runs the new query rows over the cache, reading every cached weight but the K
// and V rows of the kept keys only. Each step gives the rows a Forward over all the
// tokens would. AttendInto, with a query tensor and a Result (NewResult) kept from step
// to step, submits one recorded step again instead of recording it anew.
//
// All methods are safe for concurrent use by several goroutines.
//
// # Lifetimes
//
// A Device tracks what it hands out, as database/sql's DB does: close objects in any
// order, more than once. Device.Close waits for the calls in progress, then releases
// every object still open; later Close calls return nil and do nothing. Any other
// call on a closed object or device fails before GPU work with an error that names the
// argument ("dma: Forward: q is closed") and matches ErrClosed under errors.Is. An
// object closed while a call uses it is freed when that call ends.
package dma
