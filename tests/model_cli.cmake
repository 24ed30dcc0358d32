# End to end: `flotilla model create -> quantize -> info -> generate -> bench` on `tiny`.
if(FLOTILLA_BUILD_TESTS)
  add_test(NAME model_cli_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/model_cli_e2e.sh $<TARGET_FILE:flotilla>)
  set_tests_properties(model_cli_e2e PROPERTIES LABELS integration TIMEOUT 120
                       PASS_REGULAR_EXPRESSION "model CLI e2e: all checks passed")
endif()
