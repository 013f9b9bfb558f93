package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/dmavk/dmavk/vk"
)

func init() {
	register(&command{
		name:  "devices",
		short: "list the Vulkan devices and what each can do (* marks the default choice)",
		usage: "[--json]",
		run:   runDevices,
	})
}

// deviceInfo is one device of `dmavk devices --json`. The keys are part of the
// command's interface: add new ones, never rename.
type deviceInfo struct {
	Index               int           `json:"index"`
	Name                string        `json:"name"`
	Type                string        `json:"type"`
	Default             bool          `json:"default"`
	VendorID            uint32        `json:"vendor_id"`
	DeviceID            uint32        `json:"device_id"`
	APIVersion          string        `json:"api_version"`
	DriverVersion       uint32        `json:"driver_version"`
	DriverID            uint32        `json:"driver_id"`
	DriverName          string        `json:"driver_name"`
	DriverInfo          string        `json:"driver_info"`
	PipelineCacheUUID   string        `json:"pipeline_cache_uuid"`
	ComputeQueueFamily  int           `json:"compute_queue_family"`
	SubgroupSize        uint32        `json:"subgroup_size"`
	SubgroupSizeControl bool          `json:"subgroup_size_control"`
	MinSubgroupSize     uint32        `json:"min_subgroup_size"`
	MaxSubgroupSize     uint32        `json:"max_subgroup_size"`
	RequiredSubgroupCS  bool          `json:"required_subgroup_size_compute"`
	FullSubgroups       bool          `json:"compute_full_subgroups"`
	SharedMemory        uint32        `json:"max_shared_memory_bytes"`
	WorkgroupInvoc      uint32        `json:"max_workgroup_invocations"`
	WorkgroupSize       [3]uint32     `json:"max_workgroup_size"`
	WorkgroupCount      [3]uint32     `json:"max_workgroup_count"`
	StorageBufferRange  uint32        `json:"max_storage_buffer_range"`
	MaxBufferSize       uint64        `json:"max_buffer_size"`
	MaxAllocationSize   uint64        `json:"max_allocation_size"`
	MaxPushConstants    uint32        `json:"max_push_constants_size"`
	MaxStorageBuffers   uint32        `json:"max_storage_buffers_per_stage"`
	StorageBufferAlign  uint64        `json:"min_storage_buffer_offset_alignment"`
	Features            features      `json:"features"`
	CoopMat             bool          `json:"coopmat"`
	CoopMatShapes       []coopShape   `json:"coopmat_shapes"`
	CoopMat2            bool          `json:"coopmat2"`
	CoopMat2Flags       []string      `json:"coopmat2_flags"`
	CoopMat2Props       coopMat2Props `json:"coopmat2_properties"`
	CoopMatFlexShapes   []flexShape   `json:"coopmat_flex_shapes"`
	Timestamps          bool          `json:"timestamps"`
	TimestampPeriodNs   float64       `json:"timestamp_period_ns"`
	TimestampBits       uint32        `json:"timestamp_bits"`
	Heaps               []heapInfo    `json:"memory_heaps"`
	Extensions          []string      `json:"extensions"`
}

type features struct {
	Float16               bool `json:"float16"`
	Float64               bool `json:"float64"`
	Int8                  bool `json:"int8"`
	Int16                 bool `json:"int16"`
	Int64                 bool `json:"int64"`
	Storage16             bool `json:"storage_16bit"`
	Storage8              bool `json:"storage_8bit"`
	PushConstant16        bool `json:"push_constant_16bit"`
	BFloat16              bool `json:"bfloat16"`
	BFloat16Dot           bool `json:"bfloat16_dot"`
	BFloat16CoopMat       bool `json:"bfloat16_coopmat"`
	MemoryModel           bool `json:"vulkan_memory_model"`
	Maintenance4          bool `json:"maintenance4"`
	SubgroupExtendedTypes bool `json:"subgroup_extended_types"`
}

type coopShape struct {
	M          uint32 `json:"m"`
	N          uint32 `json:"n"`
	K          uint32 `json:"k"`
	A          string `json:"a_type"`
	B          string `json:"b_type"`
	C          string `json:"c_type"`
	Result     string `json:"result_type"`
	Saturating bool   `json:"saturating"`
	Scope      string `json:"scope"`
	Text       string `json:"text"` // e.g. "16x16x16 f16*f16+f32->f32"
}

// coopMat2Props are VkPhysicalDeviceCooperativeMatrix2PropertiesNV (zero without
// VK_NV_cooperative_matrix2).
type coopMat2Props struct {
	WorkgroupScopeMaxWorkgroupSize     uint32 `json:"workgroup_scope_max_workgroup_size"`
	FlexibleDimensionsMaxDimension     uint32 `json:"flexible_dimensions_max_dimension"`
	WorkgroupScopeReservedSharedMemory uint32 `json:"workgroup_scope_reserved_shared_memory_bytes"`
}

// flexShape is one VkCooperativeMatrixFlexibleDimensionsPropertiesNV entry.
type flexShape struct {
	MGranularity         uint32 `json:"m_granularity"`
	NGranularity         uint32 `json:"n_granularity"`
	KGranularity         uint32 `json:"k_granularity"`
	A                    string `json:"a_type"`
	B                    string `json:"b_type"`
	C                    string `json:"c_type"`
	Result               string `json:"result_type"`
	Saturating           bool   `json:"saturating"`
	Scope                string `json:"scope"`
	WorkgroupInvocations uint32 `json:"workgroup_invocations"`
	Text                 string `json:"text"` // e.g. "16x16x16 granularity f16*f16+f32->f32 subgroup"
}

type heapInfo struct {
	Size        uint64 `json:"size_bytes"`
	DeviceLocal bool   `json:"device_local"`
}

func describe(pd vk.PhysicalDevice, isDefault bool) deviceInfo {
	c := pd.Caps
	d := deviceInfo{
		Index: pd.Index, Name: c.Name, Type: c.Type.String(), Default: isDefault,
		VendorID: c.VendorID, DeviceID: c.DeviceID, APIVersion: c.APIVersionString(),
		DriverVersion: c.DriverVersion, DriverID: c.DriverID, DriverName: c.DriverName, DriverInfo: c.DriverInfo,
		PipelineCacheUUID:  hex.EncodeToString(c.CacheUUID[:]),
		ComputeQueueFamily: c.ComputeQueue,
		SubgroupSize:       c.SubgroupSize, SubgroupSizeControl: c.SubgroupSizeControl,
		MinSubgroupSize: c.MinSubgroupSize, MaxSubgroupSize: c.MaxSubgroupSize,
		RequiredSubgroupCS: c.SubgroupSizeComputeReq, FullSubgroups: c.ComputeFullSubgroups,
		SharedMemory: c.MaxSharedMemory, WorkgroupInvoc: c.MaxWorkgroupInvocations,
		WorkgroupSize: c.MaxWorkgroupSize, WorkgroupCount: c.MaxWorkgroupCount,
		StorageBufferRange: c.MaxStorageBufferRange, MaxBufferSize: c.MaxBufferSize,
		MaxAllocationSize: c.MaxAllocationSize, MaxPushConstants: c.MaxPushConstantsSize,
		MaxStorageBuffers: c.MaxStorageBuffers, StorageBufferAlign: c.MinStorageBufferAlign,
		Features: features{
			Float16: c.Float16, Float64: c.Float64, Int8: c.Int8, Int16: c.Int16, Int64: c.Int64,
			Storage16: c.Storage16, Storage8: c.Storage8, PushConstant16: c.Push16,
			BFloat16: c.BFloat16, BFloat16Dot: c.BFloat16Dot, BFloat16CoopMat: c.BFloat16Coop,
			MemoryModel: c.MemoryModel, Maintenance4: c.Maintenance4, SubgroupExtendedTypes: c.SubgroupExtendedTypes,
		},
		CoopMat: c.CoopMat, CoopMat2: c.CoopMat2,
		CoopMatShapes: []coopShape{}, CoopMat2Flags: []string{}, Heaps: []heapInfo{},
		CoopMat2Props: coopMat2Props(c.CoopMat2Props), CoopMatFlexShapes: []flexShape{},
		Timestamps: c.Timestamps(), TimestampPeriodNs: c.TimestampPeriod, TimestampBits: c.TimestampBits,
		Extensions: append([]string{}, c.Extensions...),
	}
	for _, s := range c.CoopMatShapes {
		d.CoopMatShapes = append(d.CoopMatShapes, coopShape{
			M: s.M, N: s.N, K: s.K, A: s.A.String(), B: s.B.String(), C: s.C.String(), Result: s.Result.String(),
			Saturating: s.Saturating, Scope: vk.ScopeName(s.Scope), Text: s.String(),
		})
	}
	for _, s := range c.CoopMatFlexShapes {
		d.CoopMatFlexShapes = append(d.CoopMatFlexShapes, flexShape{
			MGranularity: s.MGranularity, NGranularity: s.NGranularity, KGranularity: s.KGranularity,
			A: s.A.String(), B: s.B.String(), C: s.C.String(), Result: s.Result.String(),
			Saturating: s.Saturating, Scope: vk.ScopeName(s.Scope),
			WorkgroupInvocations: s.WorkgroupInvocations, Text: s.String(),
		})
	}
	f := c.CoopMat2Flags
	for _, fl := range []struct {
		on   bool
		name string
	}{
		{f.WorkgroupScope, "workgroup_scope"}, {f.FlexibleDimensions, "flexible_dimensions"},
		{f.Reductions, "reductions"}, {f.Conversions, "conversions"},
		{f.PerElementOperations, "per_element_operations"}, {f.TensorAddressing, "tensor_addressing"},
		{f.BlockLoads, "block_loads"},
	} {
		if fl.on {
			d.CoopMat2Flags = append(d.CoopMat2Flags, fl.name)
		}
	}
	for _, h := range c.Heaps {
		d.Heaps = append(d.Heaps, heapInfo{Size: h.Size, DeviceLocal: h.DeviceLocal})
	}
	return d
}

// runDevices is `dmavk devices [--json]`.
func runDevices(args []string, stdout io.Writer) error {
	c := commands["devices"]
	fs := newFlagSet(c, stdout)
	asJSON := fs.Bool("json", false, "print a JSON array instead of the table")
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	in, err := vk.NewInstance(vk.Config{})
	if err != nil {
		return err
	}
	defer in.Close()
	pds := in.Devices()
	// The default choice honours DMAVK_DEVICE; if that names nothing, say so but still
	// list the devices.
	def, chooseErr := in.Choose()
	infos := make([]deviceInfo, 0, len(pds))
	for _, pd := range pds {
		infos = append(infos, describe(pd, chooseErr == nil && pd.Index == def.Index))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(infos); err != nil {
			return err
		}
	} else if err := printTable(stdout, infos); err != nil {
		return err
	}
	if len(pds) == 0 {
		return fmt.Errorf("%w: the Vulkan loader lists no device (install a driver, e.g. "+
			"mesa-vulkan-drivers for the lavapipe CPU device, or the GPU vendor's driver)", vk.ErrNoDevice)
	}
	if chooseErr != nil {
		return fmt.Errorf("default device: %w", chooseErr)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// bytesText formats a size for people: "2 GiB", "48 KiB", "1.5 GiB".
func bytesText(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func printTable(w io.Writer, infos []deviceInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for i, d := range infos {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		mark := " "
		if d.Default {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s %d: %s\n", mark, d.Index, d.Name)
		kv := func(k, format string, args ...any) {
			if k != "" {
				k += ":"
			}
			fmt.Fprintf(tw, "    %s\t%s\n", k, fmt.Sprintf(format, args...))
		}
		kv("type", "%s (vendor 0x%04x, device 0x%04x)", d.Type, d.VendorID, d.DeviceID)
		kv("api version", "%s", d.APIVersion)
		drv := d.DriverName
		if d.DriverInfo != "" {
			drv += " (" + d.DriverInfo + ")"
		}
		if drv == "" {
			drv = "unknown"
		}
		kv("driver", "%s", drv)
		if d.ComputeQueueFamily < 0 {
			kv("compute queue", "none (the device cannot run dmavk)")
		}
		sg := fmt.Sprint(d.SubgroupSize)
		if d.SubgroupSizeControl {
			sg += fmt.Sprintf(" (size control %d..%d", d.MinSubgroupSize, d.MaxSubgroupSize)
			if !d.RequiredSubgroupCS {
				sg += ", not for compute"
			}
			if d.FullSubgroups {
				sg += ", full subgroups"
			}
			sg += ")"
		}
		kv("subgroup size", "%s", sg)
		kv("shared memory", "%s per workgroup", bytesText(uint64(d.SharedMemory)))
		kv("workgroup", "%d invocations, size %d x %d x %d, count %d x %d x %d", d.WorkgroupInvoc,
			d.WorkgroupSize[0], d.WorkgroupSize[1], d.WorkgroupSize[2],
			d.WorkgroupCount[0], d.WorkgroupCount[1], d.WorkgroupCount[2])
		kv("storage buffer range", "%s (%d bindings per stage, offset alignment %d)",
			bytesText(uint64(d.StorageBufferRange)), d.MaxStorageBuffers, d.StorageBufferAlign)
		maxBuf := "unknown (no maintenance4)"
		if d.MaxBufferSize > 0 {
			maxBuf = bytesText(d.MaxBufferSize)
		}
		kv("max buffer size", "%s (allocation %s)", maxBuf, bytesText(d.MaxAllocationSize))
		f := d.Features
		kv("types", "fp16 %s, bf16 %s, fp64 %s, int8 %s, int16 %s, int64 %s", yesNo(f.Float16), yesNo(f.BFloat16),
			yesNo(f.Float64), yesNo(f.Int8), yesNo(f.Int16), yesNo(f.Int64))
		kv("storage", "16-bit %s, 8-bit %s, 16-bit push constants %s", yesNo(f.Storage16), yesNo(f.Storage8), yesNo(f.PushConstant16))
		if !d.CoopMat {
			kv("cooperative matrix", "no")
		} else {
			kv("cooperative matrix", "%d shapes", len(d.CoopMatShapes))
			for _, s := range d.CoopMatShapes {
				text := s.Text
				if s.Scope != "subgroup" {
					text += " (" + s.Scope + ")"
				}
				kv("", "%s", text)
			}
		}
		if d.CoopMat2 {
			kv("cooperative matrix 2", "%s", strings.Join(d.CoopMat2Flags, ", "))
			p := d.CoopMat2Props
			kv("", "max dimension %d (flexible dimensions); max workgroup size %d, reserved shared memory %s (workgroup scope)",
				p.FlexibleDimensionsMaxDimension, p.WorkgroupScopeMaxWorkgroupSize,
				bytesText(uint64(p.WorkgroupScopeReservedSharedMemory)))
			for _, s := range d.CoopMatFlexShapes {
				kv("", "flex %s", s.Text)
			}
		} else {
			kv("cooperative matrix 2", "no")
		}
		if d.Timestamps {
			kv("timestamps", "%g ns per tick, %d bits", d.TimestampPeriodNs, d.TimestampBits)
		} else {
			kv("timestamps", "no")
		}
		for j, h := range d.Heaps {
			local := ""
			if h.DeviceLocal {
				local = ", device-local"
			}
			kv(fmt.Sprintf("memory heap %d", j), "%s%s", bytesText(h.Size), local)
		}
		kv("extensions", "%d (dmavk devices --json lists them)", len(d.Extensions))
	}
	return tw.Flush()
}
