# train_bench: LoRA training tokens/s against the engine's own prefill tokens/s (15m and
# 110m, Q4_0 and Q8_0) and peak RSS of 110m Q4_0 training at sequence 256
# (see bench/train_bench.cc and docs/training.md).
add_executable(train_bench ${CMAKE_CURRENT_SOURCE_DIR}/train_bench.cc)
target_link_libraries(train_bench PRIVATE flotilla_model flotilla_warnings)
