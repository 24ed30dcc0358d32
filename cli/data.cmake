# `flotilla data ...` and `flotilla model tokenizer ...` (cli/src/data_command.cc):
# synthetic text, the device sample store, the tokenizer trainer.
target_link_libraries(flotilla PRIVATE flotilla_model flotilla_device flotilla_synthdata)
