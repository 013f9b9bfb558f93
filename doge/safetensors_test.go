package doge_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
)

// stFiles reads safetensors files whole (the fixtures are small), for the tests.
type stFiles struct {
	tensors map[string]*nn.Array
	ints    map[string][]int32
}

func readSafetensors(paths ...string) (*stFiles, error) {
	s := &stFiles{tensors: map[string]*nn.Array{}, ints: map[string][]int32{}}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		n := binary.LittleEndian.Uint64(raw)
		var hdr map[string]json.RawMessage
		if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		data := raw[8+n:]
		for name, h := range hdr {
			if name == "__metadata__" {
				continue
			}
			var e struct {
				DType   string   `json:"dtype"`
				Shape   []int    `json:"shape"`
				Offsets [2]int64 `json:"data_offsets"`
			}
			if err := json.Unmarshal(h, &e); err != nil {
				return nil, err
			}
			b := data[e.Offsets[0]:e.Offsets[1]]
			switch e.DType {
			case "F32":
				s.tensors[name] = &nn.Array{Name: name, DType: dma.Float32, Shape: e.Shape, Data: b}
			case "F16":
				s.tensors[name] = &nn.Array{Name: name, DType: dma.Float16, Shape: e.Shape, Data: b}
			case "BF16":
				s.tensors[name] = &nn.Array{Name: name, DType: dma.BFloat16, Shape: e.Shape, Data: b}
			case "I32":
				v := make([]int32, len(b)/4)
				for i := range v {
					v[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
				}
				s.ints[name] = v
			default:
				return nil, fmt.Errorf("%s: %s: dtype %s", p, name, e.DType)
			}
		}
	}
	return s, nil
}

// readCheckpoint reads dir's model.safetensors or the shards its index names.
func readCheckpoint(dir string) (*stFiles, error) {
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		return readSafetensors(filepath.Join(dir, "model.safetensors"))
	}
	raw, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var files []string
	for _, f := range idx.WeightMap {
		if !seen[f] {
			seen[f] = true
			files = append(files, filepath.Join(dir, f))
		}
	}
	return readSafetensors(files...)
}

func (s *stFiles) Tensor(name string) (*nn.Array, error) {
	a, ok := s.tensors[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %s", name)
	}
	return a, nil
}

func (s *stFiles) Has(name string) bool { _, ok := s.tensors[name]; return ok }

// floats returns a float32 tensor's values.
func (s *stFiles) floats(name string) []float32 { return s.tensors[name].Floats() }
