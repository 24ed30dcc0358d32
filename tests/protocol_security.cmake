# Envelopes with real ECDSA P-256 identities (flotilla_security): signed by the right
# key they open, signed by another key they are refused.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_security)
  flotilla_add_test(NAME envelope_ecdsa_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/envelope_ecdsa_test.cc
    LIBS flotilla_protocol flotilla_security flotilla_core_testing
    LABELS integration)
endif()
