package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestBestFirst(t *testing.T) {
	rates := []pathRate{{Path: "coopmat2", TFLOP: 30}, {Path: "coopmat", TFLOP: 33.5}}
	bestFirst(rates)
	if rates[0].Path != "coopmat" || rates[1].Path != "coopmat2" {
		t.Errorf("order %v", rates)
	}
	rates = []pathRate{{Path: "coopmat2", TFLOP: 1}, {Path: "coopmat", TFLOP: 1}}
	bestFirst(rates)
	if rates[0].Path != "coopmat2" {
		t.Errorf("ties must keep the measuring order: %v", rates)
	}
}

// TestPeakSmall runs `dmavk peak` on a small product: every path the device has is
// measured and the best one is reported.
func TestPeakSmall(t *testing.T) {
	instanceOrSkip(t)
	var out bytes.Buffer
	if err := runPeak([]string{"--n", "64", "--copy-mib", "1", "--reps", "1", "--json"}, &out); err != nil {
		if strings.Contains(err.Error(), "no GPU timestamps") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	var res peakResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("%s", out.String())
	if len(res.MatmulPaths) == 0 || res.MatmulPath != res.MatmulPaths[0].Path || res.MatmulTFLOP != res.MatmulPaths[0].TFLOP {
		t.Fatalf("best path %s %g, paths %+v", res.MatmulPath, res.MatmulTFLOP, res.MatmulPaths)
	}
	for _, p := range res.MatmulPaths {
		if p.TFLOP <= 0 || p.TFLOP > res.MatmulTFLOP {
			t.Errorf("path %+v vs best %g", p, res.MatmulTFLOP)
		}
	}
	out.Reset()
	if err := runPeak([]string{"--n", "64", "--copy-mib", "1", "--reps", "1"}, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", out.String())
	if !strings.Contains(out.String(), "matrix: ") || !strings.Contains(out.String(), " path, 64^3") {
		t.Errorf("text output:\n%s", out.String())
	}
}
