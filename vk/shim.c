// See shim.h: the Vulkan calls whose structs vulkan-go's 1.1.88 headers lack, or whose
// Go wrappers would store Go pointers in C memory (which cgocheck2 forbids).
#include "shim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- ABI declarations (from the Vulkan specification) -------------------------------

enum {
	ST_APPLICATION_INFO = 0,
	ST_INSTANCE_CREATE_INFO = 1,
	ST_DEVICE_QUEUE_CREATE_INFO = 2,
	ST_DEVICE_CREATE_INFO = 3,
	ST_SUBMIT_INFO = 4,
	ST_SHADER_MODULE_CREATE_INFO = 16,
	ST_PIPELINE_SHADER_STAGE_CREATE_INFO = 18,
	ST_COMPUTE_PIPELINE_CREATE_INFO = 29,
	ST_PIPELINE_LAYOUT_CREATE_INFO = 30,
	ST_DESCRIPTOR_SET_LAYOUT_CREATE_INFO = 32,
	ST_WRITE_DESCRIPTOR_SET = 35,
	ST_FEATURES_2 = 1000059000,
	ST_PROPERTIES_2 = 1000059001,
	ST_FLOAT16_INT8_FEATURES = 1000082000,
	ST_16BIT_STORAGE_FEATURES = 1000083000,
	ST_SUBGROUP_PROPERTIES = 1000094000,
	ST_DEBUG_UTILS_MESSENGER_CREATE_INFO = 1000128004,
	ST_BFLOAT16_FEATURES = 1000141000,
	ST_MAINTENANCE_3_PROPERTIES = 1000168000,
	ST_SUBGROUP_EXTENDED_TYPES_FEATURES = 1000175000,
	ST_8BIT_STORAGE_FEATURES = 1000177000,
	ST_DRIVER_PROPERTIES = 1000196000,
	ST_MEMORY_MODEL_FEATURES = 1000211000,
	ST_SUBGROUP_SIZE_CONTROL_PROPERTIES = 1000225000,
	ST_REQUIRED_SUBGROUP_SIZE_CREATE_INFO = 1000225001,
	ST_SUBGROUP_SIZE_CONTROL_FEATURES = 1000225002,
	ST_MAINTENANCE_4_FEATURES = 1000413000,
	ST_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES = 1000269000,
	ST_PIPELINE_INFO = 1000269001,
	ST_PIPELINE_EXECUTABLE_PROPERTIES = 1000269002,
	ST_PIPELINE_EXECUTABLE_INFO = 1000269003,
	ST_PIPELINE_EXECUTABLE_STATISTIC = 1000269004,
	ST_MAINTENANCE_4_PROPERTIES = 1000413001,
	ST_COOPMAT_FEATURES = 1000506000,
	ST_COOPMAT_PROPERTIES = 1000506001,
	ST_COOPMAT_DEVICE_PROPERTIES = 1000506002,
	ST_COOPMAT2_FEATURES = 1000593000,
	ST_COOPMAT_FLEX_PROPERTIES = 1000593001,
	ST_COOPMAT2_PROPERTIES = 1000593002,
};

#define API_VERSION(major, minor) ((((uint32_t)(major)) << 22) | (((uint32_t)(minor)) << 12))
#define STAGE_COMPUTE 0x20u
#define DESCRIPTOR_STORAGE_BUFFER 7u

typedef struct { int32_t sType; void* pNext; } chain;

typedef struct {
	uint32_t maxImageDimension1D, maxImageDimension2D, maxImageDimension3D,
		maxImageDimensionCube, maxImageArrayLayers, maxTexelBufferElements,
		maxUniformBufferRange, maxStorageBufferRange, maxPushConstantsSize,
		maxMemoryAllocationCount, maxSamplerAllocationCount;
	uint64_t bufferImageGranularity, sparseAddressSpaceSize;
	uint32_t maxBoundDescriptorSets, maxPerStageDescriptorSamplers,
		maxPerStageDescriptorUniformBuffers, maxPerStageDescriptorStorageBuffers,
		maxPerStageDescriptorSampledImages, maxPerStageDescriptorStorageImages,
		maxPerStageDescriptorInputAttachments, maxPerStageResources,
		maxDescriptorSetSamplers, maxDescriptorSetUniformBuffers,
		maxDescriptorSetUniformBuffersDynamic, maxDescriptorSetStorageBuffers,
		maxDescriptorSetStorageBuffersDynamic, maxDescriptorSetSampledImages,
		maxDescriptorSetStorageImages, maxDescriptorSetInputAttachments,
		maxVertexInputAttributes, maxVertexInputBindings, maxVertexInputAttributeOffset,
		maxVertexInputBindingStride, maxVertexOutputComponents,
		maxTessellationGenerationLevel, maxTessellationPatchSize,
		maxTessellationControlPerVertexInputComponents,
		maxTessellationControlPerVertexOutputComponents,
		maxTessellationControlPerPatchOutputComponents,
		maxTessellationControlTotalOutputComponents,
		maxTessellationEvaluationInputComponents,
		maxTessellationEvaluationOutputComponents, maxGeometryShaderInvocations,
		maxGeometryInputComponents, maxGeometryOutputComponents,
		maxGeometryOutputVertices, maxGeometryTotalOutputComponents,
		maxFragmentInputComponents, maxFragmentOutputAttachments,
		maxFragmentDualSrcAttachments, maxFragmentCombinedOutputResources,
		maxComputeSharedMemorySize, maxComputeWorkGroupCount[3],
		maxComputeWorkGroupInvocations, maxComputeWorkGroupSize[3],
		subPixelPrecisionBits, subTexelPrecisionBits, mipmapPrecisionBits,
		maxDrawIndexedIndexValue, maxDrawIndirectCount;
	float maxSamplerLodBias, maxSamplerAnisotropy;
	uint32_t maxViewports, maxViewportDimensions[2];
	float viewportBoundsRange[2];
	uint32_t viewportSubPixelBits;
	size_t minMemoryMapAlignment;
	uint64_t minTexelBufferOffsetAlignment, minUniformBufferOffsetAlignment,
		minStorageBufferOffsetAlignment;
	int32_t minTexelOffset;
	uint32_t maxTexelOffset;
	int32_t minTexelGatherOffset;
	uint32_t maxTexelGatherOffset;
	float minInterpolationOffset, maxInterpolationOffset;
	uint32_t subPixelInterpolationOffsetBits, maxFramebufferWidth, maxFramebufferHeight,
		maxFramebufferLayers, framebufferColorSampleCounts, framebufferDepthSampleCounts,
		framebufferStencilSampleCounts, framebufferNoAttachmentsSampleCounts,
		maxColorAttachments, sampledImageColorSampleCounts,
		sampledImageIntegerSampleCounts, sampledImageDepthSampleCounts,
		sampledImageStencilSampleCounts, storageImageSampleCounts, maxSampleMaskWords;
	dv_bool timestampComputeAndGraphics;
	float timestampPeriod;
	uint32_t maxClipDistances, maxCullDistances, maxCombinedClipAndCullDistances,
		discreteQueuePriorities;
	float pointSizeRange[2], lineWidthRange[2], pointSizeGranularity, lineWidthGranularity;
	dv_bool strictLines, standardSampleLocations;
	uint64_t optimalBufferCopyOffsetAlignment, optimalBufferCopyRowPitchAlignment,
		nonCoherentAtomSize;
} vk_limits;

typedef struct {
	uint32_t apiVersion, driverVersion, vendorID, deviceID;
	int32_t deviceType;
	char deviceName[256];
	uint8_t pipelineCacheUUID[16];
	vk_limits limits;
	dv_bool sparse[5];
} vk_properties;

typedef struct { int32_t sType; void* pNext; vk_properties properties; } vk_properties2;
typedef struct { int32_t sType; void* pNext; dv_bool f[55]; } vk_features2;
enum { F_SHADER_FLOAT64 = 39, F_SHADER_INT64 = 40, F_SHADER_INT16 = 41 };

typedef struct { int32_t sType; void* pNext; uint32_t subgroupSize, supportedStages,
	supportedOperations; dv_bool quad; } vk_subgroup_props;
typedef struct { int32_t sType; void* pNext; uint32_t maxPerSetDescriptors;
	uint64_t maxMemoryAllocationSize; } vk_maint3_props;
typedef struct { int32_t sType; void* pNext; uint64_t maxBufferSize; } vk_maint4_props;
typedef struct { int32_t sType; void* pNext; int32_t driverID; char driverName[256];
	char driverInfo[256]; uint8_t conformance[4]; } vk_driver_props;
typedef struct { int32_t sType; void* pNext; uint32_t minSubgroupSize, maxSubgroupSize,
	maxComputeWorkgroupSubgroups, requiredSubgroupSizeStages; } vk_sgsc_props;
typedef struct { int32_t sType; void* pNext; uint32_t stages; } vk_coopmat_dev_props;
// VkPhysicalDeviceCooperativeMatrix2PropertiesNV:
// cooperativeMatrixWorkgroupScopeMaxWorkgroupSize,
// cooperativeMatrixFlexibleDimensionsMaxDimension,
// cooperativeMatrixWorkgroupScopeReservedSharedMemory.
typedef struct { int32_t sType; void* pNext; uint32_t wgMaxSize, flexMaxDim,
	wgReservedShared; } vk_coopmat2_props;

typedef struct { int32_t sType; void* pNext; dv_bool a, b; } vk_bool2;
typedef struct { int32_t sType; void* pNext; dv_bool a, b, c; } vk_bool3;
typedef struct { int32_t sType; void* pNext; dv_bool a, b, c, d; } vk_bool4;
typedef struct { int32_t sType; void* pNext; dv_bool a; } vk_bool1;
typedef struct { int32_t sType; void* pNext; dv_bool v[7]; } vk_bool7;

// The feature structs the query and the device creation chain; one list so the two
// cannot drift apart. Each is zeroed but for its sType.
#define FEATURE_STRUCTS \
	vk_features2 f2 = {ST_FEATURES_2}; \
	vk_bool4 s16 = {ST_16BIT_STORAGE_FEATURES}; \
	vk_bool3 s8 = {ST_8BIT_STORAGE_FEATURES}; \
	vk_bool2 f16 = {ST_FLOAT16_INT8_FEATURES}; \
	vk_bool3 mm = {ST_MEMORY_MODEL_FEATURES}; \
	vk_bool2 sgscf = {ST_SUBGROUP_SIZE_CONTROL_FEATURES}; \
	vk_bool1 sget = {ST_SUBGROUP_EXTENDED_TYPES_FEATURES}; \
	vk_bool2 cmf = {ST_COOPMAT_FEATURES}; \
	vk_bool7 cm2f = {ST_COOPMAT2_FEATURES}; \
	vk_bool3 bf16 = {ST_BFLOAT16_FEATURES}; \
	vk_bool1 m4f = {ST_MAINTENANCE_4_FEATURES}; \
	vk_bool1 pef = {ST_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES}

// What build_chain fills: the feature structs (linked through pNext, f2 first) and the
// extension names they need.
struct dv_chain {
	vk_features2 f2;
	vk_bool4 s16;
	vk_bool3 s8;
	vk_bool2 f16;
	vk_bool3 mm;
	vk_bool2 sgscf;
	vk_bool1 sget;
	vk_bool2 cmf;
	vk_bool7 cm2f;
	vk_bool3 bf16;
	vk_bool1 m4f;
	vk_bool1 pef;
	const char* exts[16];
	uint32_t next;
};

typedef struct { int32_t sType; void* pNext; uint32_t m, n, k; int32_t a, b, c, r;
	dv_bool sat; int32_t scope; } vk_coopmat_props;
// VkCooperativeMatrixFlexibleDimensionsPropertiesNV: MGranularity, NGranularity,
// KGranularity, AType, BType, CType, ResultType (VkComponentTypeKHR),
// saturatingAccumulation, scope (VkScopeKHR), workgroupInvocations.
typedef struct { int32_t sType; void* pNext; uint32_t mGran, nGran, kGran;
	int32_t a, b, c, r; dv_bool sat; int32_t scope; uint32_t wgInvocations; }
	vk_coopmat_flex_props;
_Static_assert(offsetof(vk_coopmat_flex_props, mGran) == 16 &&
	offsetof(vk_coopmat_flex_props, wgInvocations) == 52 &&
	sizeof(vk_coopmat_flex_props) == 56, "VkCooperativeMatrixFlexibleDimensionsPropertiesNV layout");
_Static_assert(offsetof(vk_coopmat2_props, wgReservedShared) == 24,
	"VkPhysicalDeviceCooperativeMatrix2PropertiesNV layout");

typedef struct { char name[256]; uint32_t specVersion, implVersion; char desc[256]; }
	vk_layer_props;

typedef void* (*PFN_gipa)(dv_handle, const char*);
typedef dv_result (*PFN_generic)();

// ---- loader ---------------------------------------------------------------------------

static PFN_gipa gipa;

int dv_load(char* err, size_t errlen) {
	if (gipa) return 0;
	// libvulkan.so.1 is the runtime name every loader package installs; the unversioned
	// name exists only where development files are installed.
	const char* names[] = {"libvulkan.so.1", "libvulkan.so"};
	void* lib = NULL;
	for (int i = 0; i < 2 && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char* e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return -1;
	}
	gipa = (PFN_gipa)dlsym(lib, "vkGetInstanceProcAddr");
	if (!gipa) {
		snprintf(err, errlen, "libvulkan has no vkGetInstanceProcAddr");
		return -1;
	}
	return 0;
}

void* dv_gipa(void) { return (void*)gipa; }

#define FN(inst, type, name) ((type)gipa((inst), (name)))

// ---- instance and validation ------------------------------------------------------------

extern void dmavkDebugMessage(uintptr_t handle, uint32_t severity, uint32_t types,
	char* message);

static dv_bool debug_callback(uint32_t severity, uint32_t types, const void* data,
	void* user) {
	// VkDebugUtilsMessengerCallbackDataEXT: sType, pNext, flags, pMessageIdName,
	// messageIdNumber, pMessage, ...
	typedef struct { int32_t sType; const void* pNext; uint32_t flags;
		const char* idName; int32_t idNumber; const char* message; } cbdata;
	const cbdata* d = (const cbdata*)data;
	dmavkDebugMessage((uintptr_t)user, severity, types, (char*)(d && d->message ? d->message : ""));
	return 0;
}

int dv_instance_has_layer(const char* name) {
	typedef dv_result (*PFN)(uint32_t*, vk_layer_props*);
	PFN f = FN(NULL, PFN, "vkEnumerateInstanceLayerProperties");
	uint32_t n = 0;
	if (!f || f(&n, NULL) != 0 || n == 0) return 0;
	vk_layer_props props[n];
	if (f(&n, props) < 0) return 0;
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(props[i].name, name) == 0) return 1;
	return 0;
}

dv_result dv_create_instance(uint32_t api_version, int validate, uintptr_t go_handle,
	dv_handle* instance, dv_handle* messenger) {
	typedef struct { int32_t sType; const void* pNext; const char* app; uint32_t appv;
		const char* eng; uint32_t engv; uint32_t api; } app_info;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; const app_info* app;
		uint32_t nlayers; const char* const* layers; uint32_t nexts;
		const char* const* exts; } inst_info;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t severity;
		uint32_t types; void* callback; void* user; } msgr_info;
	typedef dv_result (*PFN_create)(const inst_info*, const void*, dv_handle*);
	typedef dv_result (*PFN_msgr)(dv_handle, const msgr_info*, const void*, dv_handle*);

	app_info app = {ST_APPLICATION_INFO, NULL, "dmavk", 1, "dmavk", 1, api_version};
	const char* layers[] = {"VK_LAYER_KHRONOS_validation"};
	const char* exts[] = {"VK_EXT_debug_utils"};
	// warning | error; verbose and info would report normal driver chatter.
	msgr_info mi = {ST_DEBUG_UTILS_MESSENGER_CREATE_INFO, NULL, 0, 0x100 | 0x1000,
		0x1 | 0x2 | 0x4, (void*)debug_callback, (void*)go_handle};
	inst_info ii = {ST_INSTANCE_CREATE_INFO, validate ? &mi : NULL, 0, &app,
		validate ? 1 : 0, layers, validate ? 1 : 0, exts};
	PFN_create create = FN(NULL, PFN_create, "vkCreateInstance");
	if (!create) return -3;  // VK_ERROR_INITIALIZATION_FAILED
	dv_result r = create(&ii, NULL, instance);
	if (r != 0 || !validate) return r;
	PFN_msgr cm = FN(*instance, PFN_msgr, "vkCreateDebugUtilsMessengerEXT");
	if (!cm) return -7;  // VK_ERROR_EXTENSION_NOT_PRESENT
	return cm(*instance, &mi, NULL, messenger);
}

void dv_destroy_instance(dv_handle instance, dv_handle messenger) {
	typedef void (*PFN_dm)(dv_handle, dv_handle, const void*);
	typedef void (*PFN_di)(dv_handle, const void*);
	if (messenger) {
		PFN_dm dm = FN(instance, PFN_dm, "vkDestroyDebugUtilsMessengerEXT");
		if (dm) dm(instance, messenger, NULL);
	}
	FN(instance, PFN_di, "vkDestroyInstance")(instance, NULL);
}

// ---- capabilities -------------------------------------------------------------------

static int has(const char** exts, uint32_t n, const char* name) {
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(exts[i], name) == 0) return 1;
	return 0;
}

#define LINK(s) do { (s).pNext = head; head = &(s); } while (0)

void dv_query_caps(dv_handle instance, dv_handle pdev, const char** exts, uint32_t next,
	dv_caps* c) {
	typedef void (*PFN_p2)(dv_handle, void*);
	memset(c, 0, sizeof *c);
	c->ext_subgroup_size_control = has(exts, next, "VK_EXT_subgroup_size_control");
	c->ext_float16_int8 = has(exts, next, "VK_KHR_shader_float16_int8");
	c->ext_8bit_storage = has(exts, next, "VK_KHR_8bit_storage");
	c->ext_16bit_storage = has(exts, next, "VK_KHR_16bit_storage");
	c->ext_memory_model = has(exts, next, "VK_KHR_vulkan_memory_model");
	c->ext_driver_properties = has(exts, next, "VK_KHR_driver_properties");
	c->ext_coopmat = has(exts, next, "VK_KHR_cooperative_matrix");
	c->ext_coopmat2 = has(exts, next, "VK_NV_cooperative_matrix2");
	c->ext_bfloat16 = has(exts, next, "VK_KHR_shader_bfloat16");
	c->ext_subgroup_extended_types = has(exts, next, "VK_KHR_shader_subgroup_extended_types");
	c->ext_maintenance4 = has(exts, next, "VK_KHR_maintenance4");
	c->ext_pipeline_executable_properties = has(exts, next, "VK_KHR_pipeline_executable_properties");

	// Core properties first: the API version decides which structs may be chained.
	vk_properties2 p2 = {ST_PROPERTIES_2, NULL};
	FN(instance, PFN_p2, "vkGetPhysicalDeviceProperties2")(pdev, &p2);
	const vk_properties* p = &p2.properties;
	uint32_t api = p->apiVersion;
	int v12 = api >= API_VERSION(1, 2), v13 = api >= API_VERSION(1, 3);

	void* head = NULL;
	vk_subgroup_props sg = {ST_SUBGROUP_PROPERTIES};
	vk_maint3_props m3 = {ST_MAINTENANCE_3_PROPERTIES};
	vk_maint4_props m4 = {ST_MAINTENANCE_4_PROPERTIES};
	vk_driver_props drv = {ST_DRIVER_PROPERTIES};
	vk_sgsc_props sgsc = {ST_SUBGROUP_SIZE_CONTROL_PROPERTIES};
	vk_coopmat_dev_props cmp = {ST_COOPMAT_DEVICE_PROPERTIES};
	vk_coopmat2_props cm2p = {ST_COOPMAT2_PROPERTIES};
	LINK(sg);
	LINK(m3);
	if (v13 || c->ext_maintenance4) LINK(m4);
	if (v12 || c->ext_driver_properties) LINK(drv);
	if (v13 || c->ext_subgroup_size_control) LINK(sgsc);
	if (c->ext_coopmat) LINK(cmp);
	if (c->ext_coopmat2) LINK(cm2p);
	p2.pNext = head;
	FN(instance, PFN_p2, "vkGetPhysicalDeviceProperties2")(pdev, &p2);

	c->api_version = api;
	c->driver_version = p->driverVersion;
	c->vendor_id = p->vendorID;
	c->device_id = p->deviceID;
	c->device_type = (uint32_t)p->deviceType;
	memcpy(c->device_name, p->deviceName, sizeof c->device_name);
	c->device_name[255] = 0;
	memcpy(c->pipeline_cache_uuid, p->pipelineCacheUUID, 16);
	c->driver_id = (uint32_t)drv.driverID;
	memcpy(c->driver_name, drv.driverName, 256);
	c->driver_name[255] = 0;
	memcpy(c->driver_info, drv.driverInfo, 256);
	c->driver_info[255] = 0;

	const vk_limits* l = &p->limits;
	c->max_storage_buffer_range = l->maxStorageBufferRange;
	c->max_push_constants_size = l->maxPushConstantsSize;
	c->max_shared_memory = l->maxComputeSharedMemorySize;
	for (int i = 0; i < 3; i++) {
		c->max_workgroup_count[i] = l->maxComputeWorkGroupCount[i];
		c->max_workgroup_size[i] = l->maxComputeWorkGroupSize[i];
	}
	c->max_workgroup_invocations = l->maxComputeWorkGroupInvocations;
	c->max_bound_descriptor_sets = l->maxBoundDescriptorSets;
	c->max_per_stage_storage_buffers = l->maxPerStageDescriptorStorageBuffers;
	c->min_storage_buffer_offset_alignment = l->minStorageBufferOffsetAlignment;
	c->non_coherent_atom_size = l->nonCoherentAtomSize;
	c->timestamp_period = l->timestampPeriod;
	c->timestamp_compute_and_graphics = l->timestampComputeAndGraphics;
	c->max_memory_allocation_size = m3.maxMemoryAllocationSize;
	c->max_buffer_size = m4.maxBufferSize;

	c->subgroup_size = sg.subgroupSize;
	c->subgroup_supported_ops = sg.supportedOperations;
	c->subgroup_supported_stages = sg.supportedStages;
	c->min_subgroup_size = sgsc.minSubgroupSize ? sgsc.minSubgroupSize : sg.subgroupSize;
	c->max_subgroup_size = sgsc.maxSubgroupSize ? sgsc.maxSubgroupSize : sg.subgroupSize;
	c->required_subgroup_size_stages = sgsc.requiredSubgroupSizeStages;
	c->coopmat_stages = cmp.stages;
	c->coopmat2_wg_max_size = cm2p.wgMaxSize;
	c->coopmat2_flex_max_dim = cm2p.flexMaxDim;
	c->coopmat2_wg_reserved_shared = cm2p.wgReservedShared;

	// Features.
	head = NULL;
	FEATURE_STRUCTS;
	LINK(s16);
	if (v13 || c->ext_maintenance4) LINK(m4f);
	if (v12 || c->ext_8bit_storage) LINK(s8);
	if (v12 || c->ext_float16_int8) LINK(f16);
	if (v12 || c->ext_memory_model) LINK(mm);
	if (v13 || c->ext_subgroup_size_control) LINK(sgscf);
	if (v12 || c->ext_subgroup_extended_types) LINK(sget);
	if (c->ext_coopmat) LINK(cmf);
	if (c->ext_coopmat2) LINK(cm2f);
	if (c->ext_bfloat16) LINK(bf16);
	if (c->ext_pipeline_executable_properties) LINK(pef);
	f2.pNext = head;
	FN(instance, PFN_p2, "vkGetPhysicalDeviceFeatures2")(pdev, &f2);
	c->pipeline_executable_info = pef.a;

	c->shader_float64 = f2.f[F_SHADER_FLOAT64];
	c->shader_int64 = f2.f[F_SHADER_INT64];
	c->shader_int16 = f2.f[F_SHADER_INT16];
	c->storage_buffer_16bit = s16.a;
	c->storage_push_constant_16 = s16.c;
	c->storage_buffer_8bit = s8.a;
	c->shader_float16 = f16.a;
	c->shader_int8 = f16.b;
	c->vulkan_memory_model = mm.a;
	c->vulkan_memory_model_device_scope = mm.b;
	c->subgroup_size_control = sgscf.a;
	c->compute_full_subgroups = sgscf.b;
	c->subgroup_extended_types = sget.a;
	c->coopmat = cmf.a;
	c->coopmat_robust = cmf.b;
	c->coopmat2_workgroup_scope = cm2f.v[0];
	c->coopmat2_flexible_dims = cm2f.v[1];
	c->coopmat2_reductions = cm2f.v[2];
	c->coopmat2_conversions = cm2f.v[3];
	c->coopmat2_per_element = cm2f.v[4];
	c->coopmat2_tensor_addressing = cm2f.v[5];
	c->coopmat2_block_loads = cm2f.v[6];
	c->bfloat16_type = bf16.a;
	c->bfloat16_dot = bf16.b;
	c->bfloat16_coopmat = bf16.c;
	c->maintenance4 = m4f.a;
}

uint32_t dv_coopmat_shapes(dv_handle instance, dv_handle pdev, dv_coopmat_shape* out,
	uint32_t max) {
	typedef dv_result (*PFN)(dv_handle, uint32_t*, vk_coopmat_props*);
	PFN f = FN(instance, PFN, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
	uint32_t n = 0;
	if (!f || f(pdev, &n, NULL) < 0 || n == 0) return 0;
	vk_coopmat_props props[n];
	for (uint32_t i = 0; i < n; i++) {
		memset(&props[i], 0, sizeof props[i]);
		props[i].sType = ST_COOPMAT_PROPERTIES;
	}
	if (f(pdev, &n, props) < 0) return 0;
	uint32_t k = 0;
	for (uint32_t i = 0; i < n && k < max; i++, k++) {
		out[k] = (dv_coopmat_shape){props[i].m, props[i].n, props[i].k,
			(uint32_t)props[i].a, (uint32_t)props[i].b, (uint32_t)props[i].c,
			(uint32_t)props[i].r, props[i].sat, (uint32_t)props[i].scope};
	}
	return k;
}

uint32_t dv_coopmat_flex_shapes(dv_handle instance, dv_handle pdev,
	dv_coopmat_flex_shape* out, uint32_t max) {
	typedef dv_result (*PFN)(dv_handle, uint32_t*, vk_coopmat_flex_props*);
	PFN f = FN(instance, PFN,
		"vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV");
	uint32_t n = 0;
	if (!f || f(pdev, &n, NULL) < 0 || n == 0) return 0;
	vk_coopmat_flex_props props[n];
	for (uint32_t i = 0; i < n; i++) {
		memset(&props[i], 0, sizeof props[i]);
		props[i].sType = ST_COOPMAT_FLEX_PROPERTIES;
	}
	if (f(pdev, &n, props) < 0) return 0;
	uint32_t k = 0;
	for (uint32_t i = 0; i < n && k < max; i++, k++) {
		out[k] = (dv_coopmat_flex_shape){props[i].mGran, props[i].nGran, props[i].kGran,
			(uint32_t)props[i].a, (uint32_t)props[i].b, (uint32_t)props[i].c,
			(uint32_t)props[i].r, props[i].sat, (uint32_t)props[i].scope,
			props[i].wgInvocations};
	}
	return k;
}

// ---- device -----------------------------------------------------------------------------

// The pNext chain of VkDeviceCreateInfo that enables what e asks for, and the extension
// names it needs: built into c (which must stay in place while the chain is used).
static void build_chain(const dv_enable* e, dv_chain* c) {
	int v12 = e->api_version >= API_VERSION(1, 2), v13 = e->api_version >= API_VERSION(1, 3);
	uint32_t n = 0;
	void* head = NULL;
	memset(c, 0, sizeof *c);
	c->f2.sType = ST_FEATURES_2;
	c->s16.sType = ST_16BIT_STORAGE_FEATURES;
	c->s8.sType = ST_8BIT_STORAGE_FEATURES;
	c->f16.sType = ST_FLOAT16_INT8_FEATURES;
	c->mm.sType = ST_MEMORY_MODEL_FEATURES;
	c->sgscf.sType = ST_SUBGROUP_SIZE_CONTROL_FEATURES;
	c->sget.sType = ST_SUBGROUP_EXTENDED_TYPES_FEATURES;
	c->cmf.sType = ST_COOPMAT_FEATURES;
	c->cm2f.sType = ST_COOPMAT2_FEATURES;
	c->bf16.sType = ST_BFLOAT16_FEATURES;
	c->m4f.sType = ST_MAINTENANCE_4_FEATURES;
	c->pef.sType = ST_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES;

	if (e->maintenance4) {
		c->m4f.a = 1;
		if (!v13) c->exts[n++] = "VK_KHR_maintenance4";
		LINK(c->m4f);
	}
	c->f2.f[F_SHADER_INT16] = e->shader_int16;
	c->f2.f[F_SHADER_INT64] = e->shader_int64;
	c->f2.f[F_SHADER_FLOAT64] = e->shader_float64;
	if (e->storage_buffer_16bit || e->storage_push_constant_16) {
		c->s16.a = e->storage_buffer_16bit;
		c->s16.c = e->storage_push_constant_16;
		if (e->ext_16bit_storage) c->exts[n++] = "VK_KHR_16bit_storage";
		LINK(c->s16);
	}
	if (e->storage_buffer_8bit) {
		c->s8.a = 1;
		if (!v12) c->exts[n++] = "VK_KHR_8bit_storage";
		LINK(c->s8);
	}
	if (e->shader_float16 || e->shader_int8) {
		c->f16.a = e->shader_float16;
		c->f16.b = e->shader_int8;
		if (!v12) c->exts[n++] = "VK_KHR_shader_float16_int8";
		LINK(c->f16);
	}
	if (e->vulkan_memory_model) {
		c->mm.a = 1;
		c->mm.b = e->vulkan_memory_model_device_scope;
		if (!v12) c->exts[n++] = "VK_KHR_vulkan_memory_model";
		LINK(c->mm);
	}
	if (e->subgroup_size_control || e->compute_full_subgroups) {
		c->sgscf.a = e->subgroup_size_control;
		c->sgscf.b = e->compute_full_subgroups;
		if (!v13) c->exts[n++] = "VK_EXT_subgroup_size_control";
		LINK(c->sgscf);
	}
	if (e->subgroup_extended_types) {
		c->sget.a = 1;
		if (!v12) c->exts[n++] = "VK_KHR_shader_subgroup_extended_types";
		LINK(c->sget);
	}
	if (e->coopmat) {
		c->cmf.a = 1;
		c->exts[n++] = "VK_KHR_cooperative_matrix";
		LINK(c->cmf);
	}
	// Every VK_NV_cooperative_matrix2 feature the device reports is enabled (the caller
	// clears ext_coopmat2 to leave the extension off); it requires the KHR extension.
	if (e->ext_coopmat2 && e->coopmat && (e->coopmat2_workgroup_scope || e->coopmat2_flexible_dims ||
		e->coopmat2_reductions || e->coopmat2_conversions || e->coopmat2_per_element ||
		e->coopmat2_tensor_addressing || e->coopmat2_block_loads)) {
		c->cm2f.v[0] = e->coopmat2_workgroup_scope;
		c->cm2f.v[1] = e->coopmat2_flexible_dims;
		c->cm2f.v[2] = e->coopmat2_reductions;
		c->cm2f.v[3] = e->coopmat2_conversions;
		c->cm2f.v[4] = e->coopmat2_per_element;
		c->cm2f.v[5] = e->coopmat2_tensor_addressing;
		c->cm2f.v[6] = e->coopmat2_block_loads;
		c->exts[n++] = "VK_NV_cooperative_matrix2";
		LINK(c->cm2f);
	}
	if (e->ext_bfloat16 && (e->bfloat16_type || e->bfloat16_dot || e->bfloat16_coopmat)) {
		c->bf16.a = e->bfloat16_type;
		c->bf16.b = e->bfloat16_dot;
		c->bf16.c = e->bfloat16_coopmat;
		c->exts[n++] = "VK_KHR_shader_bfloat16";
		LINK(c->bf16);
	}
	if (e->ext_pipeline_executable_properties && e->pipeline_executable_info) {
		c->pef.a = 1;
		c->exts[n++] = "VK_KHR_pipeline_executable_properties";
		LINK(c->pef);
	}
	c->f2.pNext = head;
	c->next = n;
}

dv_result dv_create_device(dv_handle instance, dv_handle pdev, const dv_enable* e,
	uint32_t queue_family, dv_handle* device) {
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t family;
		uint32_t count; const float* prio; } queue_info;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t nqueues;
		const queue_info* queues; uint32_t nlayers; const char* const* layers;
		uint32_t nexts; const char* const* exts; const void* features; } device_info;
	typedef dv_result (*PFN)(dv_handle, const device_info*, const void*, dv_handle*);

	dv_chain c;
	build_chain(e, &c);
	float prio = 1.0f;
	queue_info q = {ST_DEVICE_QUEUE_CREATE_INFO, NULL, 0, queue_family, 1, &prio};
	device_info di = {ST_DEVICE_CREATE_INFO, &c.f2, 0, 1, &q, 0, NULL, c.next, c.exts, NULL};
	return FN(instance, PFN, "vkCreateDevice")(pdev, &di, NULL, device);
}

dv_chain* dv_chain_new(const dv_enable* e) {
	dv_chain* c = malloc(sizeof *c);
	if (c) build_chain(e, c);
	return c;
}

void dv_chain_free(dv_chain* c) { free(c); }

// ---- pipelines ------------------------------------------------------------------------

dv_result dv_create_compute_pipeline(dv_handle instance, dv_handle device,
	const uint32_t* code, size_t code_bytes, uint32_t nbindings, uint32_t push_bytes,
	const uint32_t* spec_values, uint32_t nspec, uint32_t required_subgroup_size,
	int full_subgroups, int capture_statistics, dv_handle cache, dv_handle* set_layout,
	dv_handle* pipeline_layout, dv_handle* pipeline, dv_handle* module) {
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; size_t size;
		const uint32_t* code; } module_info;
	typedef struct { uint32_t binding, type, count, stages; const void* samplers; } binding;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t n;
		const binding* bindings; } dsl_info;
	typedef struct { uint32_t stages, offset, size; } push_range;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t nsets;
		const dv_handle* sets; uint32_t npush; const push_range* push; } layout_info;
	typedef struct { uint32_t id, offset; size_t size; } spec_entry;
	typedef struct { uint32_t n; const spec_entry* entries; size_t size; const void* data; }
		spec_info;
	typedef struct { int32_t sType; void* pNext; uint32_t size; } subgroup_info;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t stage;
		dv_handle module; const char* name; const spec_info* spec; } stage_info;
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; stage_info stage;
		dv_handle layout; dv_handle base; int32_t base_index; } pipeline_info;
	typedef dv_result (*PFN_module)(dv_handle, const module_info*, const void*, dv_handle*);
	typedef dv_result (*PFN_dsl)(dv_handle, const dsl_info*, const void*, dv_handle*);
	typedef dv_result (*PFN_layout)(dv_handle, const layout_info*, const void*, dv_handle*);
	typedef dv_result (*PFN_pipe)(dv_handle, dv_handle, uint32_t, const pipeline_info*,
		const void*, dv_handle*);

	*set_layout = *pipeline_layout = *pipeline = *module = NULL;
	module_info mi = {ST_SHADER_MODULE_CREATE_INFO, NULL, 0, code_bytes, code};
	dv_result r = FN(instance, PFN_module, "vkCreateShaderModule")(device, &mi, NULL, module);
	if (r != 0) return r;

	binding b[nbindings ? nbindings : 1];
	for (uint32_t i = 0; i < nbindings; i++)
		b[i] = (binding){i, DESCRIPTOR_STORAGE_BUFFER, 1, STAGE_COMPUTE, NULL};
	dsl_info di = {ST_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, NULL, 0, nbindings, b};
	r = FN(instance, PFN_dsl, "vkCreateDescriptorSetLayout")(device, &di, NULL, set_layout);
	if (r != 0) return r;

	push_range pr = {STAGE_COMPUTE, 0, push_bytes};
	layout_info li = {ST_PIPELINE_LAYOUT_CREATE_INFO, NULL, 0, 1, set_layout,
		push_bytes ? 1 : 0, &pr};
	r = FN(instance, PFN_layout, "vkCreatePipelineLayout")(device, &li, NULL, pipeline_layout);
	if (r != 0) return r;

	// Specialization constant i has constant_id i and is 4 bytes wide.
	spec_entry se[nspec ? nspec : 1];
	for (uint32_t i = 0; i < nspec; i++) se[i] = (spec_entry){i, 4 * i, 4};
	spec_info si = {nspec, se, 4 * (size_t)nspec, spec_values};
	subgroup_info sgi = {ST_REQUIRED_SUBGROUP_SIZE_CREATE_INFO, NULL, required_subgroup_size};
	stage_info st = {ST_PIPELINE_SHADER_STAGE_CREATE_INFO,
		required_subgroup_size ? &sgi : NULL, full_subgroups ? 0x2u : 0u, STAGE_COMPUTE,
		*module, "main", nspec ? &si : NULL};
	// VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR
	pipeline_info pi = {ST_COMPUTE_PIPELINE_CREATE_INFO, NULL, capture_statistics ? 0x40u : 0u,
		st, *pipeline_layout, NULL, -1};
	return FN(instance, PFN_pipe, "vkCreateComputePipelines")(device, cache, 1, &pi, NULL,
		pipeline);
}

int32_t dv_pipeline_stats(dv_handle instance, dv_handle device, dv_handle pipeline,
	dv_pipeline_stat* out, uint32_t max) {
	typedef struct { int32_t sType; const void* pNext; dv_handle pipeline; } pipeline_info;
	typedef struct { int32_t sType; void* pNext; uint32_t stages; char name[256];
		char description[256]; uint32_t subgroupSize; } exec_props;
	typedef struct { int32_t sType; const void* pNext; dv_handle pipeline; uint32_t index; }
		exec_info;
	typedef struct { int32_t sType; void* pNext; char name[256]; char description[256];
		int32_t format; union { uint32_t b32; int64_t i64; uint64_t u64; double f64; } value; }
		exec_stat;
	typedef dv_result (*PFN_props)(dv_handle, const pipeline_info*, uint32_t*, exec_props*);
	typedef dv_result (*PFN_stats)(dv_handle, const exec_info*, uint32_t*, exec_stat*);
	PFN_props props = FN(instance, PFN_props, "vkGetPipelineExecutablePropertiesKHR");
	PFN_stats stats = FN(instance, PFN_stats, "vkGetPipelineExecutableStatisticsKHR");
	if (!props || !stats) return -1;
	pipeline_info pi = {ST_PIPELINE_INFO, NULL, pipeline};
	exec_props ep[8];
	uint32_t nexec = 8;
	for (uint32_t i = 0; i < nexec; i++) ep[i] = (exec_props){ST_PIPELINE_EXECUTABLE_PROPERTIES};
	dv_result r = props(device, &pi, &nexec, ep);
	if (r < 0) return -1;
	uint32_t n = 0;
	for (uint32_t x = 0; x < nexec && n < max; x++) {
		exec_stat st[64];
		uint32_t ns = 64;
		for (uint32_t i = 0; i < ns; i++) st[i] = (exec_stat){ST_PIPELINE_EXECUTABLE_STATISTIC};
		exec_info ei = {ST_PIPELINE_EXECUTABLE_INFO, NULL, pipeline, x};
		if (stats(device, &ei, &ns, st) < 0) return -1;
		for (uint32_t i = 0; i < ns && n < max; i++, n++) {
			dv_pipeline_stat* o = &out[n];
			memset(o, 0, sizeof *o);
			memcpy(o->executable, ep[x].name, 256);
			memcpy(o->name, st[i].name, 256);
			memcpy(o->description, st[i].description, 256);
			o->executable[255] = o->name[255] = o->description[255] = 0;
			o->format = (uint32_t)st[i].format;
			switch (st[i].format) {
			case 0: o->u64 = st[i].value.b32; break;
			case 1: o->i64 = st[i].value.i64; break;
			case 2: o->u64 = st[i].value.u64; break;
			case 3: o->f64 = st[i].value.f64; break;
			}
		}
	}
	return (int32_t)n;
}

// ---- submission and descriptors ---------------------------------------------------------

dv_result dv_queue_submit(dv_handle instance, dv_handle queue, dv_handle cmd,
	dv_handle fence) {
	typedef struct { int32_t sType; const void* pNext; uint32_t nwait; const void* wait;
		const void* mask; uint32_t ncmd; const dv_handle* cmds; uint32_t nsig;
		const void* sig; } submit_info;
	typedef dv_result (*PFN)(dv_handle, uint32_t, const submit_info*, dv_handle);
	submit_info si = {ST_SUBMIT_INFO, NULL, 0, NULL, NULL, 1, &cmd, 0, NULL};
	return FN(instance, PFN, "vkQueueSubmit")(queue, 1, &si, fence);
}

void dv_write_storage_buffers(dv_handle instance, dv_handle device, dv_handle set,
	uint32_t n, const dv_handle* buffers, const uint64_t* offsets,
	const uint64_t* ranges) {
	typedef struct { dv_handle buffer; uint64_t offset, range; } buffer_info;
	typedef struct { int32_t sType; const void* pNext; dv_handle set; uint32_t binding,
		element, count, type; const void* images; const buffer_info* buffers;
		const void* views; } write;
	typedef void (*PFN)(dv_handle, uint32_t, const write*, uint32_t, const void*);
	if (n == 0) return;
	buffer_info bi[n];
	write w[n];
	for (uint32_t i = 0; i < n; i++) {
		bi[i] = (buffer_info){buffers[i], offsets[i], ranges[i]};
		w[i] = (write){ST_WRITE_DESCRIPTOR_SET, NULL, set, i, 0, 1,
			DESCRIPTOR_STORAGE_BUFFER, NULL, &bi[i], NULL};
	}
	FN(instance, PFN, "vkUpdateDescriptorSets")(device, n, w, 0, NULL);
}

// ---- enumeration --------------------------------------------------------------------

uint32_t dv_device_extensions(dv_handle instance, dv_handle pdev, char* names, uint32_t max) {
	typedef struct { char name[256]; uint32_t spec; } ext_props;
	typedef dv_result (*PFN)(dv_handle, const char*, uint32_t*, ext_props*);
	PFN f = FN(instance, PFN, "vkEnumerateDeviceExtensionProperties");
	uint32_t n = 0;
	if (f(pdev, NULL, &n, NULL) < 0) return 0;
	if (!names || n == 0) return n;
	ext_props props[n];
	if (f(pdev, NULL, &n, props) < 0) return 0;
	uint32_t k = 0;
	for (; k < n && k < max; k++) {
		memcpy(names + 256 * (size_t)k, props[k].name, 256);
		names[256 * (size_t)k + 255] = 0;
	}
	return k;
}

void dv_memory_props(dv_handle instance, dv_handle pdev, dv_memory* out) {
	typedef struct { uint32_t flags, heap; } mem_type;
	typedef struct { uint64_t size; uint32_t flags; } mem_heap;
	typedef struct { uint32_t ntypes; mem_type types[32]; uint32_t nheaps; mem_heap heaps[16]; }
		mem_props;
	typedef void (*PFN)(dv_handle, mem_props*);
	mem_props p;
	memset(&p, 0, sizeof p);
	FN(instance, PFN, "vkGetPhysicalDeviceMemoryProperties")(pdev, &p);
	memset(out, 0, sizeof *out);
	out->ntypes = p.ntypes;
	out->nheaps = p.nheaps;
	for (uint32_t i = 0; i < p.ntypes && i < 32; i++) {
		out->type_flags[i] = p.types[i].flags;
		out->type_heap[i] = p.types[i].heap;
	}
	for (uint32_t i = 0; i < p.nheaps && i < 16; i++) {
		out->heap_size[i] = p.heaps[i].size;
		out->heap_flags[i] = p.heaps[i].flags;
	}
}

uint32_t dv_queue_families(dv_handle instance, dv_handle pdev, dv_queue_family* out,
	uint32_t max) {
	typedef struct { uint32_t flags, count, timestamp_bits, gw, gh, gd; } family;
	typedef void (*PFN)(dv_handle, uint32_t*, family*);
	PFN f = FN(instance, PFN, "vkGetPhysicalDeviceQueueFamilyProperties");
	uint32_t n = 0;
	f(pdev, &n, NULL);
	if (n == 0) return 0;
	family fam[n];
	f(pdev, &n, fam);
	uint32_t k = 0;
	for (; k < n && k < max; k++)
		out[k] = (dv_queue_family){fam[k].flags, fam[k].count, fam[k].timestamp_bits};
	return k;
}

dv_result dv_alloc_descriptor_set(dv_handle instance, dv_handle device, dv_handle pool,
	dv_handle layout, dv_handle* set) {
	typedef struct { int32_t sType; const void* pNext; dv_handle pool; uint32_t n;
		const dv_handle* layouts; } alloc_info;
	typedef dv_result (*PFN)(dv_handle, const alloc_info*, dv_handle*);
	alloc_info ai = {34 /* DESCRIPTOR_SET_ALLOCATE_INFO */, NULL, pool, 1, &layout};
	return FN(instance, PFN, "vkAllocateDescriptorSets")(device, &ai, set);
}

void dv_cmd_barrier(dv_handle instance, dv_handle cmd, int to_host) {
	typedef struct { int32_t sType; const void* pNext; uint32_t src, dst; } mem_barrier;
	typedef void (*PFN)(dv_handle, uint32_t, uint32_t, uint32_t, uint32_t,
		const mem_barrier*, uint32_t, const void*, uint32_t, const void*);
	// shader write | transfer write  ->  shader read | shader write | transfer read/write
	// (or host read, before the host reads a download)
	mem_barrier b = {46 /* MEMORY_BARRIER */, NULL, 0x40 | 0x1000,
		to_host ? 0x2000u : (0x20 | 0x40 | 0x800 | 0x1000)};
	// compute shader | transfer stages -> the same, or the host stage
	FN(instance, PFN, "vkCmdPipelineBarrier")(cmd, 0x800 | 0x1000,
		to_host ? 0x4000u : (0x800u | 0x1000u), 0, 1, &b, 0, NULL, 0, NULL);
}

// ---- applications' objects: adopted instances, their command buffers and semaphores --

dv_result dv_create_messenger(dv_handle instance, uintptr_t go_handle, dv_handle* messenger) {
	typedef struct { int32_t sType; const void* pNext; uint32_t flags; uint32_t severity;
		uint32_t types; void* callback; void* user; } msgr_info;
	typedef dv_result (*PFN_msgr)(dv_handle, const msgr_info*, const void*, dv_handle*);
	msgr_info mi = {ST_DEBUG_UTILS_MESSENGER_CREATE_INFO, NULL, 0, 0x100 | 0x1000,
		0x1 | 0x2 | 0x4, (void*)debug_callback, (void*)go_handle};
	PFN_msgr cm = FN(instance, PFN_msgr, "vkCreateDebugUtilsMessengerEXT");
	if (!cm) return -7;  // VK_ERROR_EXTENSION_NOT_PRESENT
	return cm(instance, &mi, NULL, messenger);
}

void dv_destroy_messenger(dv_handle instance, dv_handle messenger) {
	typedef void (*PFN_dm)(dv_handle, dv_handle, const void*);
	PFN_dm dm = FN(instance, PFN_dm, "vkDestroyDebugUtilsMessengerEXT");
	if (dm && messenger) dm(instance, messenger, NULL);
}

const void* dv_chain_next(const dv_chain* c) { return &c->f2; }
uint32_t dv_chain_nexts(const dv_chain* c) { return c->next; }
const char* dv_chain_ext(const dv_chain* c, uint32_t i) { return c->exts[i]; }
const char* const* dv_chain_exts(const dv_chain* c) { return c->exts; }

void dv_cmd_barrier_masks(dv_handle instance, dv_handle cmd, uint32_t src_stage,
	uint32_t src_access, uint32_t dst_stage, uint32_t dst_access) {
	typedef struct { int32_t sType; const void* pNext; uint32_t src, dst; } mem_barrier;
	typedef void (*PFN)(dv_handle, uint32_t, uint32_t, uint32_t, uint32_t,
		const mem_barrier*, uint32_t, const void*, uint32_t, const void*);
	mem_barrier b = {46 /* MEMORY_BARRIER */, NULL, src_access, dst_access};
	FN(instance, PFN, "vkCmdPipelineBarrier")(cmd, src_stage, dst_stage, 0, 1, &b, 0, NULL,
		0, NULL);
}

dv_result dv_queue_submit_sync(dv_handle instance, dv_handle queue, dv_handle cmd,
	dv_handle fence, uint32_t nwait, const dv_handle* wait, const uint32_t* wait_stages,
	uint32_t nsignal, const dv_handle* signal) {
	typedef struct { int32_t sType; const void* pNext; uint32_t nwait; const dv_handle* wait;
		const uint32_t* mask; uint32_t ncmd; const dv_handle* cmds; uint32_t nsig;
		const dv_handle* sig; } submit_info;
	typedef dv_result (*PFN)(dv_handle, uint32_t, const submit_info*, dv_handle);
	submit_info si = {ST_SUBMIT_INFO, NULL, nwait, wait, wait_stages, 1,
		&cmd, nsignal, signal};
	return FN(instance, PFN, "vkQueueSubmit")(queue, 1, &si, fence);
}
