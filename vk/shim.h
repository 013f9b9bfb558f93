// The small C side of package vk.
//
// vulkan-go's headers stop at Vulkan 1.1.88, so everything newer (the Features2 and
// Properties2 chains, subgroup size control, cooperative matrices, bfloat16, debug
// utils callbacks) is declared here by hand from the Vulkan specification's ABI and
// called through function pointers fetched with vkGetInstanceProcAddr. Nothing here
// includes a Vulkan header, so the package builds without the Vulkan SDK.
#ifndef DMAVK_SHIM_H
#define DMAVK_SHIM_H

#include <stddef.h>
#include <stdint.h>

typedef int32_t dv_result;
typedef void* dv_handle;  // dispatchable and (on 64-bit) non-dispatchable handles
typedef uint32_t dv_bool;

// Capabilities of one physical device, flattened for Go.
typedef struct dv_caps {
	uint32_t api_version, driver_version, vendor_id, device_id, device_type;
	char device_name[256];
	uint8_t pipeline_cache_uuid[16];
	uint32_t driver_id;
	char driver_name[256];
	char driver_info[256];

	// limits
	uint32_t max_storage_buffer_range, max_push_constants_size, max_shared_memory;
	uint32_t max_workgroup_count[3], max_workgroup_invocations, max_workgroup_size[3];
	uint32_t max_bound_descriptor_sets, max_per_stage_storage_buffers;
	uint64_t min_storage_buffer_offset_alignment, non_coherent_atom_size;
	uint64_t max_memory_allocation_size, max_buffer_size;
	float timestamp_period;
	dv_bool timestamp_compute_and_graphics;

	// subgroups
	uint32_t subgroup_size, subgroup_supported_ops, subgroup_supported_stages;
	dv_bool subgroup_size_control, compute_full_subgroups;
	uint32_t min_subgroup_size, max_subgroup_size, required_subgroup_size_stages;

	// arithmetic and storage features
	dv_bool shader_float16, shader_int8, shader_int16, shader_int64, shader_float64;
	dv_bool storage_buffer_16bit, storage_buffer_8bit, storage_push_constant_16;
	dv_bool vulkan_memory_model, vulkan_memory_model_device_scope;
	dv_bool subgroup_extended_types;
	dv_bool bfloat16_type, bfloat16_dot, bfloat16_coopmat;
	dv_bool maintenance4;  // LocalSizeId (workgroup size from specialization constants)

	// cooperative matrices
	dv_bool coopmat, coopmat_robust;
	uint32_t coopmat_stages;
	dv_bool coopmat2_workgroup_scope, coopmat2_flexible_dims, coopmat2_reductions,
		coopmat2_conversions, coopmat2_per_element, coopmat2_tensor_addressing,
		coopmat2_block_loads;
	uint32_t coopmat2_wg_max_size, coopmat2_flex_max_dim, coopmat2_wg_reserved_shared;

	// which extensions the device lists (used to build the pNext chains)
	dv_bool ext_subgroup_size_control, ext_float16_int8, ext_8bit_storage,
		ext_16bit_storage, ext_memory_model, ext_driver_properties, ext_coopmat,
		ext_coopmat2, ext_bfloat16, ext_subgroup_extended_types, ext_maintenance4;

	// VK_KHR_pipeline_executable_properties: the driver's statistics of a pipeline
	// (registers, shared memory, spills...), for tuning.
	dv_bool pipeline_executable_info, ext_pipeline_executable_properties;
} dv_caps;

// One VkCooperativeMatrixPropertiesKHR entry.
typedef struct dv_coopmat_shape {
	uint32_t m, n, k, a_type, b_type, c_type, result_type, saturating, scope;
} dv_coopmat_shape;

// Features to enable at device creation: a copy of dv_caps where the caller cleared
// what it does not want.
typedef dv_caps dv_enable;

int dv_load(char* err, size_t errlen);
void* dv_gipa(void);

dv_result dv_create_instance(uint32_t api_version, int validate, uintptr_t go_handle,
	dv_handle* instance, dv_handle* messenger);
void dv_destroy_instance(dv_handle instance, dv_handle messenger);
int dv_instance_has_layer(const char* name);

void dv_query_caps(dv_handle instance, dv_handle pdev, const char** exts, uint32_t next,
	dv_caps* caps);
uint32_t dv_coopmat_shapes(dv_handle instance, dv_handle pdev, dv_coopmat_shape* out,
	uint32_t max);

// One VkCooperativeMatrixFlexibleDimensionsPropertiesNV entry (VK_NV_cooperative_matrix2).
typedef struct dv_coopmat_flex_shape {
	uint32_t m_gran, n_gran, k_gran, a_type, b_type, c_type, result_type, saturating,
		scope, workgroup_invocations;
} dv_coopmat_flex_shape;

// The flexible-dimension shapes; call only when the device lists
// VK_NV_cooperative_matrix2. Returns how many entries were written (at most max).
uint32_t dv_coopmat_flex_shapes(dv_handle instance, dv_handle pdev,
	dv_coopmat_flex_shape* out, uint32_t max);

dv_result dv_create_device(dv_handle instance, dv_handle pdev, const dv_enable* en,
	uint32_t queue_family, dv_handle* device);

dv_result dv_create_compute_pipeline(dv_handle instance, dv_handle device,
	const uint32_t* code, size_t code_bytes, uint32_t nbindings, uint32_t push_bytes,
	const uint32_t* spec_values, uint32_t nspec, uint32_t required_subgroup_size,
	int full_subgroups, int capture_statistics, dv_handle cache, dv_handle* set_layout,
	dv_handle* pipeline_layout, dv_handle* pipeline, dv_handle* module);

// One statistic of one executable of a pipeline (VkPipelineExecutableStatisticKHR):
// format 0 bool, 1 int64, 2 uint64, 3 float64, with the value in the matching field.
typedef struct dv_pipeline_stat {
	char executable[256], name[256], description[256];
	uint32_t format;
	int64_t i64;
	uint64_t u64;
	double f64;
} dv_pipeline_stat;

// The statistics of every executable of a pipeline created with capture_statistics;
// returns how many were written (at most max), or -1 when the driver refused.
int32_t dv_pipeline_stats(dv_handle instance, dv_handle device, dv_handle pipeline,
	dv_pipeline_stat* out, uint32_t max);

dv_result dv_queue_submit(dv_handle instance, dv_handle queue, dv_handle cmd,
	dv_handle fence);

// Device extensions: fills names (n entries of 256 bytes) and returns the count; with
// names == NULL returns the count only.
uint32_t dv_device_extensions(dv_handle instance, dv_handle pdev, char* names, uint32_t max);

typedef struct dv_memory {
	uint32_t ntypes, nheaps;
	uint32_t type_flags[32], type_heap[32];
	uint64_t heap_size[16];
	uint32_t heap_flags[16];
} dv_memory;
void dv_memory_props(dv_handle instance, dv_handle pdev, dv_memory* out);

typedef struct dv_queue_family { uint32_t flags, count, timestamp_bits; } dv_queue_family;
uint32_t dv_queue_families(dv_handle instance, dv_handle pdev, dv_queue_family* out,
	uint32_t max);

dv_result dv_alloc_descriptor_set(dv_handle instance, dv_handle device, dv_handle pool,
	dv_handle layout, dv_handle* set);

// A full memory barrier between compute and transfer work on one queue.
void dv_cmd_barrier(dv_handle instance, dv_handle cmd, int to_host);

void dv_write_storage_buffers(dv_handle instance, dv_handle device, dv_handle set,
	uint32_t n, const dv_handle* buffers, const uint64_t* offsets,
	const uint64_t* ranges);

// ---- applications' objects (adopt.go, external.go) --------------------------------------

// The feature chain and extension names of a device creation, for an application that
// creates the device itself (see DeviceRequest.Chain).
typedef struct dv_chain dv_chain;
dv_chain* dv_chain_new(const dv_enable* en);
void dv_chain_free(dv_chain* c);
const void* dv_chain_next(const dv_chain* c);  // the VkPhysicalDeviceFeatures2 at its head
uint32_t dv_chain_nexts(const dv_chain* c);
const char* dv_chain_ext(const dv_chain* c, uint32_t i);
const char* const* dv_chain_exts(const dv_chain* c);

// A debug messenger on an instance the application created with VK_EXT_debug_utils.
dv_result dv_create_messenger(dv_handle instance, uintptr_t go_handle, dv_handle* messenger);
void dv_destroy_messenger(dv_handle instance, dv_handle messenger);

// One memory barrier with the given masks.
void dv_cmd_barrier_masks(dv_handle instance, dv_handle cmd, uint32_t src_stage,
	uint32_t src_access, uint32_t dst_stage, uint32_t dst_access);

// vkQueueSubmit of one command buffer that waits on and signals binary semaphores.
dv_result dv_queue_submit_sync(dv_handle instance, dv_handle queue, dv_handle cmd,
	dv_handle fence, uint32_t nwait, const dv_handle* wait, const uint32_t* wait_stages,
	uint32_t nsignal, const dv_handle* signal);

#endif
