package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/vk"
)

// instanceOrSkip skips when the machine has no Vulkan loader (outside CI).
func instanceOrSkip(t *testing.T) *vk.Instance {
	t.Helper()
	in, err := vk.NewInstance(vk.Config{})
	if err != nil {
		if errors.Is(err, vk.ErrNoLoader) && os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

func TestDevicesTable(t *testing.T) {
	in := instanceOrSkip(t)
	var out bytes.Buffer
	if err := runDevices(nil, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Logf("\n%s", text)
	def, err := in.Choose()
	if err != nil {
		t.Fatal(err)
	}
	for _, pd := range in.Devices() {
		if !strings.Contains(text, pd.Caps.Name) {
			t.Errorf("table lacks device name %q", pd.Caps.Name)
		}
	}
	if !strings.Contains(text, "* "+itoa(def.Index)+": "+def.Caps.Name) {
		t.Errorf("table does not mark the default device %d: %s", def.Index, def.Caps.Name)
	}
	for _, key := range []string{"api version:", "driver:", "subgroup size:", "shared memory:", "max buffer size:",
		"cooperative matrix:", "timestamps:", "memory heap 0:"} {
		if !strings.Contains(text, key) {
			t.Errorf("table lacks %q", key)
		}
	}
	for _, s := range def.Caps.CoopMatShapes {
		if !strings.Contains(text, s.String()) {
			t.Errorf("table lacks cooperative matrix shape %s", s)
		}
	}
	if def.Caps.CoopMat2 {
		p := def.Caps.CoopMat2Props
		want := fmt.Sprintf("max dimension %d (flexible dimensions); max workgroup size %d, reserved shared memory %s",
			p.FlexibleDimensionsMaxDimension, p.WorkgroupScopeMaxWorkgroupSize, bytesText(uint64(p.WorkgroupScopeReservedSharedMemory)))
		if !strings.Contains(text, want) {
			t.Errorf("table lacks the coopmat2 properties line %q", want)
		}
		for _, s := range def.Caps.CoopMatFlexShapes {
			if !strings.Contains(text, "flex "+s.String()+"\n") {
				t.Errorf("table lacks flexible shape line %q", "flex "+s.String())
			}
		}
	} else if strings.Contains(text, "flex ") {
		t.Errorf("table lists flexible shapes without coopmat2")
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestDevicesJSON(t *testing.T) {
	in := instanceOrSkip(t)
	var out bytes.Buffer
	if err := runDevices([]string{"--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal(out.Bytes(), &list); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, out.String())
	}
	pds := in.Devices()
	if len(list) != len(pds) {
		t.Fatalf("%d devices in JSON, instance lists %d", len(list), len(pds))
	}
	keys := []string{"index", "name", "type", "default", "api_version", "driver_name", "driver_info",
		"subgroup_size", "min_subgroup_size", "max_subgroup_size", "max_shared_memory_bytes",
		"max_workgroup_invocations", "max_storage_buffer_range", "max_buffer_size", "features",
		"coopmat", "coopmat_shapes", "coopmat2", "coopmat2_flags", "coopmat2_properties", "coopmat_flex_shapes",
		"timestamps", "timestamp_period_ns",
		"memory_heaps", "extensions"}
	defaults := 0
	for i, d := range list {
		for _, k := range keys {
			if _, ok := d[k]; !ok {
				t.Errorf("device %d: no key %q", i, k)
			}
		}
		if _, ok := d["raw"]; ok {
			t.Errorf("device %d: raw caps leaked into JSON", i)
		}
		if d["name"] != pds[i].Caps.Name {
			t.Errorf("device %d: name %v, want %q", i, d["name"], pds[i].Caps.Name)
		}
		feats, _ := d["features"].(map[string]any)
		for _, k := range []string{"float16", "int8", "int16", "int64", "storage_16bit", "storage_8bit", "bfloat16"} {
			if _, ok := feats[k]; !ok {
				t.Errorf("device %d: features lack %q", i, k)
			}
		}
		shapes, _ := d["coopmat_shapes"].([]any)
		if len(shapes) != len(pds[i].Caps.CoopMatShapes) {
			t.Errorf("device %d: %d shapes, caps have %d", i, len(shapes), len(pds[i].Caps.CoopMatShapes))
		}
		flex, ok := d["coopmat_flex_shapes"].([]any)
		if !ok || len(flex) != len(pds[i].Caps.CoopMatFlexShapes) {
			t.Errorf("device %d: coopmat_flex_shapes %v, caps have %d", i, d["coopmat_flex_shapes"], len(pds[i].Caps.CoopMatFlexShapes))
		}
		for j, f := range flex {
			m, _ := f.(map[string]any)
			s := pds[i].Caps.CoopMatFlexShapes[j]
			if m["m_granularity"] != float64(s.MGranularity) || m["k_granularity"] != float64(s.KGranularity) ||
				m["c_type"] != s.C.String() || m["scope"] != vk.ScopeName(s.Scope) || m["text"] != s.String() {
				t.Errorf("device %d: flexible shape %d is %v, caps have %s", i, j, m, s)
			}
		}
		props, _ := d["coopmat2_properties"].(map[string]any)
		p := pds[i].Caps.CoopMat2Props
		for k, v := range map[string]uint32{"workgroup_scope_max_workgroup_size": p.WorkgroupScopeMaxWorkgroupSize,
			"flexible_dimensions_max_dimension":            p.FlexibleDimensionsMaxDimension,
			"workgroup_scope_reserved_shared_memory_bytes": p.WorkgroupScopeReservedSharedMemory} {
			if props[k] != float64(v) {
				t.Errorf("device %d: coopmat2_properties.%s = %v, want %d", i, k, props[k], v)
			}
		}
		if d["default"] == true {
			defaults++
		}
	}
	if defaults != 1 {
		t.Errorf("%d devices marked default, want 1", defaults)
	}
}

func TestDevicesHonoursDMAVKDevice(t *testing.T) {
	in := instanceOrSkip(t)
	last := in.Devices()[len(in.Devices())-1]
	t.Setenv("DMAVK_DEVICE", itoa(last.Index))
	var out bytes.Buffer
	if err := runDevices([]string{"--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var list []struct {
		Index   int  `json:"index"`
		Default bool `json:"default"`
	}
	if err := json.Unmarshal(out.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.Default != (d.Index == last.Index) {
			t.Errorf("device %d: default=%v with DMAVK_DEVICE=%d", d.Index, d.Default, last.Index)
		}
	}
	t.Setenv("DMAVK_DEVICE", "no-such-gpu")
	out.Reset()
	err := runDevices(nil, &out)
	if !errors.Is(err, vk.ErrNoDevice) {
		t.Errorf("DMAVK_DEVICE=no-such-gpu: err %v, want ErrNoDevice", err)
	}
	if !strings.Contains(out.String(), last.Caps.Name) {
		t.Errorf("devices still listed when DMAVK_DEVICE matches nothing; got\n%s", out.String())
	}
}

func TestDispatchUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if rc := dispatch(nil, &out, &errOut); rc != 2 {
		t.Errorf("no command: exit %d, want 2", rc)
	}
	errOut.Reset()
	if rc := dispatch([]string{"nonsense"}, &out, &errOut); rc != 2 || !strings.Contains(errOut.String(), `dmavk: unknown command "nonsense"`) {
		t.Errorf("unknown command: exit %d, stderr %q", rc, errOut.String())
	}
	errOut.Reset()
	if rc := dispatch([]string{"devices", "--bogus"}, &out, &errOut); rc != 2 || !strings.Contains(errOut.String(), "bogus") {
		t.Errorf("bad flag: exit %d, stderr %q", rc, errOut.String())
	}
	out.Reset()
	if rc := dispatch([]string{"help"}, &out, &errOut); rc != 0 || !strings.Contains(out.String(), "devices") {
		t.Errorf("help: exit %d, stdout %q", rc, out.String())
	}
	out.Reset()
	if rc := dispatch([]string{"help", "devices"}, &out, &errOut); rc != 0 || !strings.Contains(out.String(), "-json") {
		t.Errorf("help devices: exit %d, stdout %q", rc, out.String())
	}
}
