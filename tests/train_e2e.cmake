# Training end to end (issue 4): pretrain a small base on the generic synthetic corpus,
# LoRA fine-tune one device's data over the Q8_0 base (in process), and the shipped CLI
# `model pretrain -> quantize -> finetune -> eval`. Label: integration.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_device AND TARGET flotilla_synthdata)
  flotilla_add_test(NAME train_e2e_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/train_e2e_test.cc
                    LIBS flotilla_model flotilla_device flotilla_synthdata LABELS integration TIMEOUT 400)
  target_compile_definitions(train_e2e_test PRIVATE FLOTILLA_CLI="$<TARGET_FILE:flotilla>")
  add_dependencies(train_e2e_test flotilla)
endif()
