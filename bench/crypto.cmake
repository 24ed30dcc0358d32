# crypto_bench: AES-CTR mask PRG (mbedTLS vs OpenSSL), X25519, ECDSA, SHA-256, AES-GCM.
# Plain executable printing medians of 5 repetitions.
if(FLOTILLA_BUILD_BENCH)
  add_executable(crypto_bench ${CMAKE_CURRENT_LIST_DIR}/crypto_bench.cc)
  target_link_libraries(crypto_bench PRIVATE flotilla_security flotilla_warnings)
endif()
