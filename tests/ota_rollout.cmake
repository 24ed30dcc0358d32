# Fleet rollout (reference/ota.md 6.5 #9): 1,000 real OtaClients against a real
# repository, ArtifactServer and RolloutManager; integration label.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_rollouts AND TARGET flotilla_ota_test_support)
  flotilla_add_test(NAME ota_rollout_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/ota_rollout_test.cc
    LIBS flotilla_rollouts flotilla_ota_test_support flotilla_transport_testing
    LABELS integration
    TIMEOUT 300)
endif()
