"""GGUF: chat templates that reach Python internals (CVE-2024-34359) and secrets in metadata."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Severity
from bastion.scan.api import scan_path
from bastion.scan.formats.jinja_template import TemplateUnparsed, judge_template, name_risk
from corpus import builders
from corpus.expect import assert_fails_with, assert_incomplete_with, assert_passes, describe


def test_gguf_with_an_ordinary_chat_template_passes(tmp_path: Path) -> None:
    report = scan_path(builders.gguf_file(tmp_path, builders.BENIGN_CHAT_TEMPLATE, "model.gguf"))
    assert_passes(report)
    assert report.files[0].formats == ("gguf",)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(builders.SSTI_CHAT_TEMPLATE, id="subclasses-walk"),
        pytest.param(builders.SSTI_POPEN_TEMPLATE, id="builtins-import-popen"),
    ],
)
def test_chat_template_that_escapes_the_sandbox_is_blocked(template: str, tmp_path: Path) -> None:
    report = scan_path(builders.gguf_file(tmp_path, template, "model.gguf"))
    assert_fails_with(report, "gguf.template-injection")
    members = {f.location.member for f in report.findings if f.rule_id == "gguf.template-injection"}
    assert members == {"tokenizer.chat_template"}, describe(report.findings)


def test_injected_template_is_found_by_content_without_a_gguf_name(tmp_path: Path) -> None:
    path = builders.gguf_file(tmp_path, builders.SSTI_CHAT_TEMPLATE, "model.bin")
    assert_fails_with(scan_path(path), "gguf.template-injection")


def test_credential_in_gguf_metadata_is_reported(tmp_path: Path) -> None:
    template = builders.BENIGN_CHAT_TEMPLATE + "{# uploaded with " + builders.AWS_KEY_ID + " #}"
    report = scan_path(builders.gguf_file(tmp_path, template, "model.gguf"))
    assert_fails_with(report, "secrets.credential")
    assert all(builders.AWS_KEY_ID not in f.evidence + f.message for f in report.findings)


# -- templates judged on Jinja2's syntax tree, not by keywords ---------------------------------

# Benign chat templates (GGUF `tokenizer.chat_template` of Llama 3.1, Mistral, Qwen2.5/3, Gemma 2/3/4,
# Phi-3/4, DeepSeek V3, Nemotron, Command-R, Kimi), written for these tests after the structure of real models' templates
# (constructs and idioms, not copies): each must pass.
BENIGN_TEMPLATES = {
    "llama-3.1-tools": (
        "{{- bos_token }}\n"
        "{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}\n"
        "{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}\n"
        "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
        '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}{%- endif %}\n'
        "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}\n"
        "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
        '{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}\n'
        '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
        '{%- if builtin_tools is defined or tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}\n'
        '{%- if builtin_tools is defined %}{{- "Tools: " + builtin_tools | reject(\'equalto\', \'code_interpreter\') | join(", ") + "\\n\\n"}}{%- endif %}\n'
        '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
        '{%- if tools is not none and not tools_in_user_message %}{%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}{%- endif %}\n'
        '{{- system_message }}{{- "<|eot_id|>" }}\n'
        "{%- for message in messages %}\n"
        "  {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
        "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
        "  {%- elif 'tool_calls' in message %}\n"
        '    {%- if not message.tool_calls|length == 1 %}{{- raise_exception("This model only supports single tool-calls at once!") }}{%- endif %}\n'
        "    {%- set tool_call = message.tool_calls[0].function %}\n"
        "    {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n"
        '      {{- "<|python_tag|>" + tool_call.name + ".call(" }}\n'
        "      {%- for arg_name, arg_val in tool_call.arguments | items %}{{- arg_name + '=\"' + arg_val + '\"' }}{%- if not loop.last %}{{- \", \" }}{%- endif %}{%- endfor %}\n"
        '      {{- ")" }}\n'
        '    {%- else %}{{- \'{"name": "\' + tool_call.name + \'", "parameters": \' }}{{- tool_call.arguments | tojson }}{{- "}" }}{%- endif %}\n'
        '  {%- elif message.role == "tool" or message.role == "ipython" %}\n'
        "    {%- if message.content is mapping or message.content is iterable %}{{- message.content | tojson }}{%- else %}{{- message.content }}{%- endif %}\n"
        "  {%- endif %}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}\n"
    ),
    "mistral-v0.3": (
        '{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}'
        "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
        "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}"
        '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}'
        '{%- for message in loop_messages | rejectattr("role", "equalto", "tool") | rejectattr("role", "equalto", "tool_results") | selectattr("tool_calls", "undefined") %}'
        '{%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}'
        '{{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}'
        "{%- endif %}{%- endfor %}{{- bos_token }}"
        '{%- for message in loop_messages %}{%- if message["role"] == "user" %}'
        '{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS] [" }}'
        '{%- for tool in tools %}{%- set tool = tool.function %}{{- \'{"type": "function", "function": {\' }}'
        "{%- for key, val in tool.items() if key != \"return\" %}{%- if val is string %}{{- '\"' + key + '\": \"' + val + '\"' }}"
        "{%- else %}{{- '\"' + key + '\": ' + val|tojson }}{%- endif %}{%- if not loop.last %}{{- \", \" }}{%- endif %}{%- endfor %}"
        '{{- "}}" }}{%- if not loop.last %}{{- ", " }}{%- else %}{{- "]" }}{%- endif %}{%- endfor %}{{- "[/AVAILABLE_TOOLS]" }}{%- endif %}'
        '{%- if loop.last and system_message is defined %}{{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}'
        '{%- else %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- endif %}'
        '{%- elif message.tool_calls is defined and message.tool_calls is not none %}{{- "[TOOL_CALLS] [" }}'
        "{%- for tool_call in message.tool_calls %}{%- set out = tool_call.function|tojson %}{{- out[:-1] }}"
        '{%- if not tool_call.id is defined or tool_call.id|length != 9 %}{{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}{%- endif %}'
        '{{- \', "id": "\' + tool_call.id + \'"}\' }}{%- if not loop.last %}{{- ", " }}{%- else %}{{- "]" + eos_token }}{%- endif %}{%- endfor %}'
        '{%- elif message["role"] == "assistant" %}{{- " " + message["content"]|trim + eos_token}}'
        '{%- elif message["role"] == "tool_results" or message["role"] == "tool" %}'
        "{%- if message.content is defined and message.content.content is defined %}{%- set content = message.content.content %}{%- else %}{%- set content = message.content %}{%- endif %}"
        '{{- \'[TOOL_RESULTS] {"content": \' + content|string + ", " }}{{- \'"call_id": "\' + message.tool_call_id[-9:] + \'"}[/TOOL_RESULTS]\' }}'
        '{%- else %}{{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}{%- endif %}{%- endfor %}'
    ),
    "qwen2.5-tools": (
        "{%- if tools %}{{- '<|im_start|>system\\n' }}"
        "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
        '{{- "\\n\\n# Tools\\n\\n<tools>" }}{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}'
        '{{- "\\n</tools>\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}'
        "{%- else %}{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}"
        "{%- for message in messages %}"
        '{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}'
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
        "{%- elif message.role == \"assistant\" %}{{- '<|im_start|>' + message.role }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
        "{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
        "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}"
        "{{- '<|im_end|>\\n' }}"
        '{%- elif message.role == "tool" %}'
        "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}{{- '<|im_start|>user' }}{%- endif %}"
        "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
        "{%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}{{- '<|im_end|>\\n' }}{%- endif %}"
        "{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    ),
    "qwen3-thinking": (
        "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
        "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
        "{%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}"
        "{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}"
        "{%- for message in messages %}{%- if message.content is string %}{%- set content = message.content %}{%- else %}{%- set content = '' %}{%- endif %}"
        "{%- if message.role == \"assistant\" %}{%- set reasoning_content = '' %}"
        "{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}"
        "{%- elif '</think>' in content %}{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
        "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
        "{%- if loop.index0 > ns.last_query_index %}{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
        "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}{{- '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
    ),
    "gemma-2": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    ),
    "gemma-3-multimodal": (
        "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- if messages[0]['content'] is string -%}"
        "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- else -%}"
        "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}{%- endif -%}"
        '{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}'
        "{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
        "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
        "{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- elif message['content'] is iterable -%}"
        "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
        "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
        "{%- else -%}{{ raise_exception(\"Invalid content type\") }}{%- endif -%}{{ '<end_of_turn>\\n' }}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}"
    ),
    "gemma-tool-macros": (
        "{%- macro format_argument(argument, escape_keys=True) -%}{%- if argument is string -%}{{- '<|\"|>' + argument + '<|\"|>' -}}"
        "{%- elif argument is boolean -%}{{- 'true' if argument else 'false' -}}"
        "{%- elif argument is mapping -%}{{- '{' -}}{%- set ns = namespace(found_first=false) -%}"
        "{%- for key, value in argument | dictsort -%}{%- if ns.found_first %},{% endif -%}{%- set ns.found_first = true -%}"
        "{%- if escape_keys -%}{{- '<|\"|>' + key + '<|\"|>' -}}{%- else -%}{{- key -}}{%- endif -%}"
        ":{{- format_argument(value, escape_keys=escape_keys) -}}{%- endfor -%}{{- '}' -}}"
        "{%- elif argument is sequence -%}{{- '[' -}}{%- for item in argument -%}{{- format_argument(item, escape_keys=escape_keys) -}}"
        "{%- if not loop.last %},{% endif -%}{%- endfor -%}{{- ']' -}}{%- else -%}{{- argument -}}{%- endif -%}{%- endmacro -%}"
        "{%- macro format_parameters(properties, required) -%}{%- set standard_keys = ['description', 'type', 'properties', 'required'] -%}"
        "{%- for key, value in properties | dictsort -%}{%- if key not in standard_keys -%}{{ key }}:{\n"
        "{%- set value_type = value['type'] if value['type'] is string else value['type'][0] -%}"
        "{%- if value_type | upper == 'OBJECT' and value['properties'] is defined -%}"
        "{{- format_parameters(value['properties'], value['required'] | default([])) -}}{%- endif -%}"
        "{%- if value['enum'] -%}enum:{{ format_argument(value['enum']) }}{%- endif -%}"
        "type:{{ format_argument(value['type'] | map('upper') | list) }}}{%- endif -%}{%- endfor -%}{%- endmacro -%}"
        "{%- for tool in tools -%}{{- format_parameters(tool['function']['parameters']['properties'], []) -}}{%- endfor -%}"
        "{%- for message in messages -%}{%- if message['tool_calls'] -%}{%- for tool_call in message['tool_calls'] -%}"
        "{%- set function = tool_call['function'] -%}{{- 'call:' + function['name'] + '{' -}}"
        "{%- for key, value in function['arguments'] | dictsort -%}{{- key -}}:{{- format_argument(value, escape_keys=False) -}}{%- endfor -%}"
        "{%- endfor -%}{%- endif -%}{{- message['content'] | default('') -}}{%- endfor -%}"
    ),
    "phi-3": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
        "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    "phi-4-mini-tools": (
        '{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}'
        '{% elif tools is defined -%}{%- set system_message = "" -%}{%- endif %}'
        "{%- if system_message is defined -%}{{- '<|system|>' + system_message -}}{%- if tools is defined -%}"
        "{% for tool in tools %}{{- '<|tool|>' + (tool['function'] | tojson) + '<|/tool|>' -}}{% endfor %}{%- endif -%}{{- '<|end|>' -}}{%- endif -%}"
        "{%- for message in messages -%}{%- if message['role'] == 'tool' -%}{{- '<|tool_response|>' + (message['content'] | tojson) + '<|end|>' -}}"
        "{%- elif message['role'] != 'system' -%}{{- '<|' + message['role'] + '|>' -}}{%- if message.content -%}{{- message['content'] -}}{%- endif -%}"
        "{%- for tool_call in message.tool_calls -%}{{- '<|tool_call|>' + (tool_call['function'] | tojson) + '<|/tool_call|>' -}}{%- endfor -%}"
        "{{- '<|end|>' -}}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- else -%}{{- eos_token -}}{%- endif -%}"
    ),
    "deepseek-v3": (
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
        "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
        "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
        "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
        "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}"
        "{{ bos_token }}{{ ns.system_prompt }}"
        "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}"
        "{%- elif message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
        "{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}"
        "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
        "{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '<｜tool▁call▁end｜>'}}"
        "{%- endif %}{%- endfor %}{%- elif message['role'] == 'assistant' and message['content'] is not none %}"
        "{%- set content = message['content'] %}{%- if '</think>' in content %}{%- set content = content.split('</think>', 1)[1] %}{%- endif %}"
        "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}"
        "{%- elif message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
        "{%- endif %}{%- endfor -%}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
    ),
    "nemotron-tilde": (
        '{% set bos = "<|begin_of_text|>" %}{% set eot = "<|eot_id|>" %}{% set user_token = "user" %}'
        '{{- bos ~ "<|start_header_id|>" ~ "system" ~ "<|end_header_id|>\\n\\n" -}}'
        "{%- if messages[0].role == 'system' and messages[0].content != '' -%}{%- set system_content = messages[0].content -%}"
        "{%- if '/no_think' in system_content -%}{%- set system_content = system_content.replace('/no_think', '')|trim -%}{%- endif -%}"
        "{{- system_content + '\\n\\n' -}}{%- endif -%}"
        "{%- for tool in tools -%}{{- (tool.function if tool.function is defined else tool) | tojson -}}{{- ', ' if not loop.last else '' -}}{%- endfor -%}"
        '{%- for message in messages -%}{%- if message.role == user_token -%}{{- "<|start_header_id|>" ~ user_token ~ "<|end_header_id|>\\n\\n" -}}{{ message.content -}}{{ eot -}}'
        "{%- elif message.role == 'tool' -%}{%- if loop.first or (messages[loop.index0 - 1].role != 'tool') -%}{{ '<TOOL_RESPONSE>[' -}}{%- endif -%}"
        "{{- ', ' if not loop.last and (messages[loop.index0 + 1].role == 'tool') else '' -}}"
        "{%- elif '</think>' in message.content -%}{%- set content = message.content.split('</think>')[-1].lstrip() -%}{{ content }}{%- endif -%}{%- endfor -%}"
    ),
    "chatml-loopcontrols-and-generation": (
        "{% for message in messages %}{% if message['role'] == 'system' and loop.index0 > 0 %}{% continue %}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% if loop.index > 1000 %}{% break %}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "command-r-style": (
        "{{ bos_token }}{% set preamble = 'You are a helpful assistant.' %}{% if messages[0]['role'] == 'system' %}"
        "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}"
        "{% set loop_messages = messages %}{% set system_message = preamble %}{% endif %}"
        "{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}"
        "{% for message in loop_messages %}{% set content = message['content'] %}"
        "{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}"
        "{% elif message['role'] == 'assistant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor %}"
        "{% for document in documents %}{{ '\\nDocument: ' }}{{ loop.index0 }}\\n{% for key, value in document.items() %}"
        "{{ key }}: {{ value }}\\n{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
    ),
    "kimi-content-parts": (
        "{%- for message in messages -%}{%- if loop.first and messages[0]['role'] != 'system' -%}"
        "{{ '<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>' }}{%- endif -%}"
        "{%- if message['content'] is string -%}{{- message['content'] + '<|im_end|>' -}}{%- else -%}"
        "{%- for content in message['content'] -%}{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
        "{{ '<|media_start|>image<|media_content|><|media_pad|><|media_end|>' }}{%- else -%}{{ content['text'] }}{%- endif -%}{%- endfor -%}"
        "{%- endif -%}{%- endfor -%}"
    ),
    "tool-args-items-format": (
        "{%- for message in messages %}{%- if message.tool_calls %}{%- for tc in message.tool_calls %}"
        "{{- '<tool_call>' + tc.function.name }}{%- for k, v in tc.function.arguments.items() %}"
        "{{- '<arg_key>{}</arg_key><arg_value>{}</arg_value>'.format(k, v if v is string else v | tojson(ensure_ascii=False)) }}"
        "{%- endfor %}{{- '</tool_call>' }}{%- endfor %}{%- endif %}"
        "{{- '%s: %s\\n' % (message.role, message.content) }}{%- set parts = message.content.split('\\n') %}"
        "{{- parts | join(' ') | replace('<', '&lt;') }}{{- message.get('name', '') }}{{- messages[-1]['content'] }}{%- endfor %}"
        "{%- set tokens = ['<|im_start|>', '<|im_end|>'] %}{{- tokens[0] ~ 'assistant' }}"
        "{%- set role_names = {'user': 'Human', 'assistant': 'AI'} %}{{- role_names[messages[0].role|lower] }}"
    ),
}


# Escapes that a keyword list cannot see: names built at render time, reached by item access,
# filters, format fields, namespaces, macros and globals. Each must fail.
MALICIOUS_TEMPLATES = {
    "dot-class": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "item-concat": '{{ x["__glo" ~ "bals__"] }}',
    "attr-filter-popen": '{{ os|attr("po"~"pen") }}',
    "set-var-init": '{% set u="__" %}{{ x[u~"init"~u] }}',
    "plus-class": '{{ x["__cla"+"ss__"] }}',
    "join-list": '{{ x[["__cla","ss__"]|join] }}',
    "format-field": '{{ "{0.__class__}".format(x) }}',
    "map-attribute": '{{ x|map(attribute="__class__.__mro__")|list }}',
    "namespace-attr": '{% set ns=namespace(k="__glo"~"bals__") %}{{ x[ns.k] }}',
    "macro-arg": '{% macro f(n) %}{{ x[n] }}{% endmacro %}{{ f("_"*2 ~ "globals" ~ "_"*2) }}',
    "reversed": '{{ x["__slabolg__"[::-1]] }}',
    "percent-format": '{{ x["%sglobals%s"|format("__","__")] }}',
    "cycler-init": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "block-set": "{% set s %}__globals__{% endset %}{{ x[s] }}",
    "lower": '{{ x["__GLOBALS__"|lower] }}',
    "dict-kwarg": "{{ x[dict(__globals__=1)|first] }}",
    "replace": '{{ x["_X_globals_X_"|replace("X", "_")] }}',
    "loop-literal": '{% for n in ["__in", "it__"] %}{% set ns = namespace() %}{% endfor %}{{ x[["__in","it__"]|join] }}',
    "runtime-chars": "{{ x[(messages|string)[0] ~ (messages|string)[1]] }}",
    "string-method-join": '{{ x["".join(["__cla", "ss__"])] }}',
    "self-ref": "{{ self._TemplateReference__context }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "joiner": "{{ joiner.__init__ }}",
    "getitem-globals": "{{ raise_exception['__globals__'] }}",
    "include": "{% include '/etc/passwd' %}",
    "selectattr-dunder": '{{ messages|selectattr("__class__")|list }}',
    "format-method-data": "{{ messages[0].content.format(messages) }}",
    "attr-from-data": "{% for m in messages %}{{ m|attr(m.role) }}{% endfor %}",
    "with-block": '{% with n = "__glo" ~ "bals__" %}{{ x[n] }}{% endwith %}',
    "loop-over-string-chars": '{% for c in "_g" %}{% set ns = namespace() %}{% endfor %}{% set n = "" %}{% for c in "_" %}{{ x[c ~ c ~ "globals" ~ c ~ c] }}{% endfor %}',
    "default-filter": '{{ x[undefined_thing|default("__globals__")] }}',
    "cond-expr": '{{ x["a" if y else "__glo" ~ "bals__"] }}',
    "f_globals": "{{ g.gi_frame.f_globals }}",
    "do-ext": '{% do x.update({"a": "__glo" ~ "bals__"}) %}',
    "mod-tuple": '{{ x["%s%s" % ("__globals", "__")] }}',
    "mul-string": '{{ x["_" * 2 ~ "init" ~ "_" * 2] }}',
    "attr-unpacked": '{{ x|attr(*["__cla" ~ "ss__"]) }}',
    "map-unpacked-kwargs": '{{ x|map(**{"attribute": "__in" ~ "it__"})|list }}',
}

HIGH_ONLY = {"runtime-chars", "format-method-data", "attr-from-data", "include"}


def _gguf(folder: Path, kvs: list[tuple[str, str]], name: str = "model.gguf") -> Path:
    """A GGUF v3 file whose metadata holds the given string keys (repeats kept), no tensors."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs) + 1))
    out += text("general.architecture") + struct.pack("<I", builders.GGUF_STRING) + text("llama")
    for key, value in kvs:
        out += text(key) + struct.pack("<I", builders.GGUF_STRING) + text(value)
    out += bytes(-len(out) % 32)  # the data section starts aligned, as gguf-py writes it
    path = folder / name
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize("name", sorted(BENIGN_TEMPLATES))
def test_real_chat_template_structures_pass(name: str, tmp_path: Path) -> None:
    report = scan_path(builders.gguf_file(tmp_path, BENIGN_TEMPLATES[name], "model.gguf"))
    assert_passes(report)
    assert not report.findings, describe(report.findings)


@pytest.mark.parametrize("name", sorted(MALICIOUS_TEMPLATES))
def test_template_escape_built_at_render_time_is_blocked(name: str, tmp_path: Path) -> None:
    template = MALICIOUS_TEMPLATES[name] + BENIGN_TEMPLATES["gemma-2"]
    report = scan_path(builders.gguf_file(tmp_path, template, "model.gguf"))
    expected = {"gguf.template-computed-name", "gguf.template-global", "gguf.template-loader"}
    if name not in HIGH_ONLY:
        expected = {"gguf.template-injection"}
    assert_fails_with(report, *expected)
    severity = max(f.severity for f in report.findings)
    assert severity is (Severity.HIGH if name in HIGH_ONLY else Severity.CRITICAL), describe(report.findings)


@pytest.mark.parametrize(
    ("source", "evidence"),
    [
        pytest.param('{{ x["__glo" ~ "bals__"] }}', "__globals__", id="concat"),
        pytest.param('{{ x|attr("po" ~ "pen") }}', "popen", id="attr-filter"),
        pytest.param('{% set u = "__" %}{{ x.y[u ~ "init" ~ u] }}', "__init__", id="variable"),
    ],
)
def test_the_folded_name_is_the_evidence(source: str, evidence: str) -> None:
    assert evidence in {r.evidence for r in judge_template(source)}


def test_named_templates_and_duplicate_keys_are_each_judged(tmp_path: Path) -> None:
    """A clean `tokenizer.chat_template` first must not hide a hostile copy or a named variant."""
    clean = BENIGN_TEMPLATES["qwen2.5-tools"]
    hostile = MALICIOUS_TEMPLATES["item-concat"]
    for kvs in (
        [("tokenizer.chat_template", clean), ("tokenizer.chat_template", hostile)],
        [("tokenizer.chat_template", clean), ("tokenizer.chat_template.tool_use", hostile)],
        [("tokenizer.chat_template", clean), ("tokenizer.chat_templates.rag", hostile)],
    ):
        report = scan_path(_gguf(tmp_path, kvs))
        assert_fails_with(report, "gguf.template-injection")
        members = {f.location.member for f in report.findings if f.rule_id == "gguf.template-injection"}
        assert members == {kvs[1][0]}, describe(report.findings)


def test_template_that_does_not_parse_is_not_analysed(tmp_path: Path) -> None:
    # The runtime would refuse it too, but an unreadable template is never "safe".
    report = scan_path(_gguf(tmp_path, [("tokenizer.chat_template", "{% for m in messages %}{{ m.__class__ }")]))
    assert_incomplete_with(report, "scan.incomplete")


def test_other_metadata_is_judged_only_when_it_is_a_template(tmp_path: Path) -> None:
    prose = "Fine-tuned with {% raw; see {{ the model card }} for details."  # not Jinja: never rendered
    assert_passes(scan_path(_gguf(tmp_path, [("general.description", prose)], "a.gguf")))
    hostile = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    assert_fails_with(
        scan_path(_gguf(tmp_path, [("general.description", hostile)], "b.gguf")), "gguf.template-injection"
    )


_PIECES = [
    "{{ ", " }}", "{% ", " %}", "set ", "for ", "in ", "endfor", "if ", "endif", "macro ", "endmacro", "x", "ns", "m",
    "messages", "loop.index0", ".", "[", "]", "(", ")", "|", "join", "attr", "replace", "format", "~", "+", "*", "%",
    "'__'", "'glo'", "'bals'", "'po'", "'pen'", "'_'", "2", "-1", ",", "=", "namespace(", "dict(", "lipsum", "self",
    "cycler", "__class__", "'{0.__init__}'", "[::-1]", "lower", "list", "first", "with ", "endwith",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_template_judge_gives_a_verdict_or_not_analysed(pieces: list[str]) -> None:
    """Any source: a list of risks, or TemplateUnparsed; never another error (it would read as a crash)."""
    with contextlib.suppress(TemplateUnparsed):
        risks = judge_template("".join(pieces))
        assert all(r.severity >= Severity.HIGH for r in risks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["'__'", "'glo'", "'bals'", "'_'", "'g'", "'lo'", "'obals'"]), min_size=1, max_size=6))
def test_a_dunder_spelt_in_pieces_is_caught_however_it_is_joined(parts: list[str]) -> None:
    name = "".join(p.strip("'") for p in parts)
    expected = name_risk(name, item=True) is not None  # the folding is under test, not the name rule
    for joined in (" ~ ".join(parts), " + ".join(parts), "[" + ", ".join(parts) + "]|join"):
        risks = judge_template("{{ x[" + joined + "] }}")
        assert any(r.severity is Severity.CRITICAL for r in risks) == expected, (joined, risks)


def test_chat_template_jinja_file_is_judged(tmp_path: Path) -> None:
    """transformers loads chat_template.jinja beside the tokenizer as its template."""
    (tmp_path / "chat_template.jinja").write_text(MALICIOUS_TEMPLATES["join-list"])
    assert_fails_with(scan_path(tmp_path / "chat_template.jinja"), "hf-tokenizer.template-injection")
    (tmp_path / "ok.jinja").write_text(BENIGN_TEMPLATES["qwen3-thinking"])
    assert_passes(scan_path(tmp_path / "ok.jinja"))


def test_vocabulary_only_gguf_without_padding_passes(tmp_path: Path) -> None:
    """No tensors means no data section: an unpadded end is not a truncation."""
    path = _gguf(tmp_path, [("tokenizer.chat_template", BENIGN_TEMPLATES["phi-3"])])
    data = path.read_bytes().rstrip(b"\x00")
    path.write_bytes(data)
    assert_passes(scan_path(path))
