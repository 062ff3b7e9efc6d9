package config

import (
	"bytes"
	"sort"

	"github.com/BurntSushi/toml"
)

// Encode writes the effective configuration as TOML, the way check-config
// prints it.
func (c *Config) Encode() ([]byte, error) {
	var b bytes.Buffer
	err := toml.NewEncoder(&b).Encode(c)
	return b.Bytes(), err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
