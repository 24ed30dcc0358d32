# End-to-end: the shipped `flotilla demo` must run and pass all its checks.
if(FLOTILLA_BUILD_TESTS)
  add_test(NAME cli_demo_e2e COMMAND flotilla demo --devices 3)
  set_tests_properties(cli_demo_e2e PROPERTIES LABELS integration TIMEOUT 120
                       PASS_REGULAR_EXPRESSION "demo: all [0-9]+ checks passed"
                       FAIL_REGULAR_EXPRESSION "FAIL")
endif()
