// Package shaders holds the SPIR-V compute shaders built from shaders/*.comp
// by tools/glslc.sh and committed under shaders/spv.
package shaders

import (
	"embed"
	"encoding/binary"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// The directory, not spv/*.spv: a pattern that matches no file fails the
// build, and the directory always holds at least README.md.
//
//go:embed spv
var spv embed.FS

const spirvMagic = 0x07230203

// Names returns the names of all embedded shaders (file names without the
// .spv extension, e.g. "matmul_f16"), sorted.
func Names() []string {
	entries, err := fs.ReadDir(spv, "spv")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".spv"); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Get returns the SPIR-V words of the named shader, e.g. "matmul_f16"
// (a trailing ".spv" is accepted). The returned slice is shared; do not
// modify it.
func Get(name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".spv")
	if name == "" || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("shaders: invalid shader name %q", name)
	}
	b, err := spv.ReadFile("spv/" + name + ".spv")
	if err != nil {
		known := Names()
		if len(known) == 0 {
			return nil, fmt.Errorf("shaders: no shader %q: no SPIR-V embedded (run tools/glslc.sh)", name)
		}
		return nil, fmt.Errorf("shaders: no shader %q (known: %s)", name, strings.Join(known, ", "))
	}
	if len(b) < 20 || len(b)%4 != 0 || binary.LittleEndian.Uint32(b) != spirvMagic {
		return nil, fmt.Errorf("shaders: %s.spv is not little-endian SPIR-V", name)
	}
	return b, nil
}
