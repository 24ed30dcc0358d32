# Fleet rollout (reference/ota.md 6.5 #9) through the OTA fleet simulator
# (flotilla_simulator_ota): 1,000 real OtaClients against a real repository,
# ArtifactServer and RolloutManager, plus download faults and crashes; integration label.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_simulator_ota AND TARGET flotilla_ota_test_support)
  flotilla_add_test(NAME ota_rollout_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/ota_rollout_test.cc
    LIBS flotilla_simulator_ota flotilla_ota_test_support nlohmann_json::nlohmann_json
    LABELS integration
    TIMEOUT 300)
endif()
