package dma

// mru keeps up to max values by key, most recently used first, and closes the values it
// drops: a KV cache's recorded programs.
type mru[K comparable, V interface{ close() }] struct {
	max  int
	keys []K
	vals []V
}

// get returns the value of key and makes it the most recently used.
func (m *mru[K, V]) get(key K) (V, bool) {
	for i, k := range m.keys {
		if k == key {
			v := m.vals[i]
			copy(m.keys[1:i+1], m.keys[:i])
			copy(m.vals[1:i+1], m.vals[:i])
			m.keys[0], m.vals[0] = key, v
			return v, true
		}
	}
	var zero V
	return zero, false
}

// add puts key's value first, closing the least recently used beyond max.
func (m *mru[K, V]) add(key K, v V) {
	m.keys = append([]K{key}, m.keys...)
	m.vals = append([]V{v}, m.vals...)
	if len(m.keys) > m.max {
		m.vals[len(m.vals)-1].close()
		m.keys, m.vals = m.keys[:m.max], m.vals[:m.max]
	}
}

// closeAll closes every value and empties m.
func (m *mru[K, V]) closeAll() {
	for _, v := range m.vals {
		v.close()
	}
	m.keys, m.vals = nil, nil
}
