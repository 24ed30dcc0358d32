# OTA rollout benchmarks (bench/ota_bench.cc, docs/ota.md "Benchmarks").
if(TARGET flotilla_rollouts)
  add_executable(ota_bench ${CMAKE_CURRENT_SOURCE_DIR}/ota_bench.cc)
  target_link_libraries(ota_bench PRIVATE flotilla_rollouts flotilla_ota flotilla_ota_repo flotilla_model
                        flotilla_security flotilla_warnings)
endif()
