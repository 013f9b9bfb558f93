// Package checkpoint opens Hugging Face model directories: config.json,
// generation_config.json, tokenizer.json and the weights in model.safetensors or in shards
// listed by model.safetensors.index.json. Files are memory-mapped, not read: a tensor's
// bytes are the mapped file until Close. Errors name the file and the tensor concerned
// and wrap one of the Err values, for errors.Is.
package checkpoint

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// The files of a model directory.
const (
	ConfigFile     = "config.json"
	GenerationFile = "generation_config.json"
	TokenizerFile  = "tokenizer.json"
	WeightsFile    = "model.safetensors"
	IndexFile      = "model.safetensors.index.json"
)

// Model is an open model directory. It is safe for concurrent use; Close releases the
// mapped files, after which tensor data may not be used.
type Model struct {
	Dir        string
	Config     *Config
	ConfigJSON []byte // config.json as read, for callers that parse more of it
	Generation GenerationConfig
	// Tokenizer is the path of tokenizer.json, "" when the directory has none.
	Tokenizer string

	files   []*File
	tensors map[string]*Tensor
	where   string // the weights file or index, for errors about a tensor not found
	once    sync.Once
	err     error
}

// Open reads dir's config and maps its weights. Every tensor the index lists must be in
// the shard it names.
func Open(dir string) (*Model, error) {
	cfgPath := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmtMissing(cfgPath, err)
	}
	cfg, err := ParseConfig(data, cfgPath)
	if err != nil {
		return nil, err
	}
	m := &Model{Dir: dir, Config: cfg, ConfigJSON: data, Generation: DefaultGeneration(cfg), tensors: map[string]*Tensor{}}
	genPath := filepath.Join(dir, GenerationFile)
	if g, err := os.ReadFile(genPath); err == nil {
		if m.Generation, err = ParseGeneration(g, genPath, cfg); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if tp := filepath.Join(dir, TokenizerFile); fileExists(tp) {
		m.Tokenizer = tp
	}
	if err := m.openWeights(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func fmtMissing(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errorf(path, "", ErrMissing, "no such file")
	}
	return err
}

func (m *Model) openWeights() error {
	single := filepath.Join(m.Dir, WeightsFile)
	index := filepath.Join(m.Dir, IndexFile)
	switch {
	case fileExists(index):
		return m.openIndex(index)
	case fileExists(single):
		f, err := OpenFile(single)
		if err != nil {
			return err
		}
		m.files = append(m.files, f)
		m.where = single
		for name, t := range f.tensors {
			m.tensors[name] = t
		}
		return nil
	}
	detail := "neither " + WeightsFile + " nor " + IndexFile
	if fileExists(filepath.Join(m.Dir, "pytorch_model.bin")) {
		detail += " (pytorch_model.bin is not read: convert it to safetensors)"
	}
	return errorf(m.Dir, "", ErrMissing, "%s", detail)
}

func (m *Model) openIndex(index string) error {
	data, err := os.ReadFile(index)
	if err != nil {
		return err
	}
	var ix struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &ix); err != nil {
		return errorf(index, "", ErrCorrupt, "%v", err)
	}
	if len(ix.WeightMap) == 0 {
		return errorf(index, "", ErrCorrupt, "weight_map lists no tensors")
	}
	m.where = index
	shards := map[string]*File{}
	names := make([]string, 0, len(ix.WeightMap))
	for name := range ix.WeightMap {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		shard := ix.WeightMap[name]
		if shard == "" || filepath.Base(shard) != shard || shard == "." || shard == ".." {
			return errorf(index, name, ErrCorrupt, "shard %q is not a file name in the directory", shard)
		}
		f, ok := shards[shard]
		if !ok {
			p := filepath.Join(m.Dir, shard)
			if !fileExists(p) {
				return errorf(index, name, ErrMissing, "its shard %s does not exist", p)
			}
			if f, err = OpenFile(p); err != nil {
				return err
			}
			shards[shard] = f
			m.files = append(m.files, f)
		}
		t, err := f.Tensor(name)
		if err != nil {
			return errorf(f.Path, name, ErrMissing, "listed there by %s but not in the file", IndexFile)
		}
		m.tensors[name] = t
	}
	return nil
}

// Names lists the model's tensors, sorted.
func (m *Model) Names() []string {
	names := make([]string, 0, len(m.tensors))
	for n := range m.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Has reports whether the model has the named tensor.
func (m *Model) Has(name string) bool {
	_, ok := m.tensors[name]
	return ok
}

// Tensor returns the named tensor, or an error wrapping ErrMissing that names the
// weights file (or index) it was looked for in.
func (m *Model) Tensor(name string) (*Tensor, error) {
	t, ok := m.tensors[name]
	if !ok {
		return nil, errorf(m.where, name, ErrMissing, "not in the checkpoint")
	}
	return t, nil
}

// Weight returns the named tensor if it is F32, F16 or BF16 and has exactly shape.
func (m *Model) Weight(name string, shape ...int) (*Tensor, error) {
	t, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	if !t.DType.IsFloat() {
		return nil, errorf(t.File, name, ErrDType, "%s; weights must be F32, F16 or BF16", t.DType)
	}
	if err := t.CheckShape(shape...); err != nil {
		return nil, err
	}
	return t, nil
}

// Close unmaps the weights. It may be called more than once.
func (m *Model) Close() error {
	m.once.Do(func() {
		for _, f := range m.files {
			if err := f.Close(); err != nil && m.err == nil {
				m.err = err
			}
		}
	})
	return m.err
}
