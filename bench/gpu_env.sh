# Sourced by the bench/gpu*.sh device scripts: unpacks the Vulkan loader packages of
# ../shared/gpu/README.md (fetched into .gl/), points the loader at the NVIDIA driver,
# keeps the pipeline cache in /tmp, and names the prebuilt CLI ($D).
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export DMAVK_CACHE_DIR=/tmp/dmavk-cache
D=.gpu/dmavk
