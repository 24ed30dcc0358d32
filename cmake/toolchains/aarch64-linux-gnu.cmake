# Cross-compile for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu (GCC 12).
# Used by scripts/test-arm.sh; binaries run under qemu-aarch64 -L /usr/aarch64-linux-gnu.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

set(CMAKE_SYSROOT_COMPILE /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
# Programs (protoc, etc.) from the host; headers, libraries and packages from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Let CTest / add_test run the binaries through qemu.
find_program(FLOTILLA_QEMU_AARCH64 qemu-aarch64)
if(FLOTILLA_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${FLOTILLA_QEMU_AARCH64};-L;/usr/aarch64-linux-gnu;-cpu;max)
endif()
