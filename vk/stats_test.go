package vk_test

import (
	"errors"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// A device opened with pipeline statistics reports them for every pipeline where the
// driver offers the extension; without the feature, Statistics says how to get them.
func TestPipelineStatistics(t *testing.T) {
	plain := vktest.Device(t, vk.Features{})
	if plain.Caps().PipelineStatistics {
		t.Fatal("a device opened without PipelineStatistics claims them")
	}
	_, err := matmulPipeline(t, plain).Statistics()
	if err == nil {
		t.Fatal("Statistics without the feature succeeded")
	}
	t.Logf("without the feature: %v", err)

	d := vktest.Device(t, vk.Features{PipelineStatistics: true, DisablePipelineCache: true})
	p := matmulPipeline(t, d)
	if !d.Caps().PipelineStatistics {
		t.Skipf("%s has no VK_KHR_pipeline_executable_properties", d.Caps().Name)
	}
	stats, err := p.Statistics()
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) == 0 {
		t.Fatal("no statistics")
	}
	for _, s := range stats {
		if s.Name == "" {
			t.Errorf("a statistic without a name: %+v", s)
		}
		t.Logf("%s: %s = %g (%s)", s.Executable, s.Name, s.Value, s.Description)
	}
	found := false
	for _, q := range d.Pipelines() {
		found = found || q == p
	}
	if !found {
		t.Error("Pipelines lacks an open pipeline")
	}
	p.Close()
	for _, q := range d.Pipelines() {
		if q == p {
			t.Error("Pipelines lists a closed pipeline")
		}
	}
	if _, err := p.Statistics(); !errors.Is(err, vk.ErrClosed) {
		t.Fatalf("Statistics after Close: %v, want ErrClosed", err)
	}
}
