package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/checkpoint"
)

// TestGenerateFixture: greedy generation from the tiny fixture's prompt ids gives
// transformers' greedy tokens, and the command ends with the rates line; text prompts
// go through the tokenizer.
func TestGenerateFixture(t *testing.T) {
	instanceOrSkip(t)
	dir := filepath.Join("..", "..", "testdata", "doge", "tiny")
	f, err := checkpoint.OpenFile(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ints := func(name string) []string {
		x, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := x.Int64s()
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, i := range v {
			s = append(s, fmt.Sprint(i))
		}
		return s
	}
	var out bytes.Buffer
	err = runGenerate([]string{"--model", dir, "--prompt-ids", strings.Join(ints("prompt_ids"), ","), "--max-tokens", "16", "--greedy"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if got, want := strings.TrimSpace(lines[0]), strings.Join(ints("greedy_ids"), " "); got != want {
		t.Errorf("tokens %s, transformers %s", got, want)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "prompt: 300 tokens, ") || !strings.Contains(last, "generation: 16 tokens, ") {
		t.Errorf("last line %q", last)
	}
	// The prompt in chunks of 64 gives the same tokens.
	out.Reset()
	err = runGenerate([]string{"--model", dir, "--prompt-ids", strings.Join(ints("prompt_ids"), ","), "--max-tokens", "16", "--greedy", "--chunk", "64"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(strings.Split(out.String(), "\n")[0]), strings.Join(ints("greedy_ids"), " "); got != want {
		t.Errorf("--chunk 64: tokens %s, transformers %s", got, want)
	}
	out.Reset()
	if err := runGenerate([]string{"--model", dir, "--prompt", "Hello", "--max-tokens", "3", "--temperature", "0.7", "--seed", "5", "--batch", "2"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--- continuation 2:") || !strings.Contains(out.String(), "generation: 6 tokens") {
		t.Errorf("output %q", out.String())
	}
	for _, bad := range [][]string{{"--prompt", "x"}, {"--model", dir}, {"--model", dir, "--random", "small"}, {"--random", "huge", "--bench"}, {"--model", dir, "--prompt", "x", "--chunk", "10"}} {
		if err := runGenerate(bad, &out); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestGenerateBenchSmall: --bench on a small random model prints a row per context.
func TestGenerateBenchSmall(t *testing.T) {
	instanceOrSkip(t)
	var out bytes.Buffer
	if err := runGenerate([]string{"--random", "small", "--bench", "--contexts", "100", "--steps", "3", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var rows []dogeBenchRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rows) != 1 || rows[0].Context != 100 || rows[0].Steps < 1 || !(rows[0].DecodeTokensS > 0) || !(rows[0].HostShare > 0 && rows[0].HostShare < 1) {
		t.Fatalf("%+v", rows)
	}
}
