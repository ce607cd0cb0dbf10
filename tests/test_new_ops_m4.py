"""The operators added for published MCU models (issue 12), on the emulated Cortex-M4 with the
kernels for its DSP extension (ops without a specialised kernel run the portable C, built for
the M4): each per-op model bit-exact against both oracles."""

from __future__ import annotations

import pytest

from helpers import OPS_DIR
from mcugen.validate import validate
from mcugen.validate_board import runner_kwargs

MODELS = [
    "mean_c_keepdims", "mean_w_nokeepdims", "mean_hc_keepdims", "mean_nhwc_all_nokeepdims", "mean_rank3_last",
    "transpose_nchw_mean_w_then_h", "mean_h_then_w_se", "transpose_unit_axes",
    "shape_slice_pack_reshape", "shape_gather_pack_reshape",
    "resize_nearest_2x", "resize_nearest_up_align_corners", "resize_nearest_up_half_pixel", "resize_nearest_down_half_pixel",
    "resize_bilinear_2x", "resize_bilinear_up_align_corners", "resize_bilinear_up_half_pixel", "resize_bilinear_down_half_pixel",
    "sub_same_none", "sub_broadcast_relu", "sub_rank3_range_ends", "sub_const_rank2",
    "squared_difference_same_none", "squared_difference_broadcast_none", "squared_difference_rank3_range_ends",
    "squared_difference_const_rank2", "minimum_broadcast", "minimum_rank2_broadcast", "maximum_same", "maximum_const",
    "reduce_max_12_keep_rank4", "reduce_max_3_nokeep_rank4", "reduce_max_02_nokeep_rank3", "reduce_max_1_keep_rank2",
    "reduce_max_0123_nokeep_rank4",
    "slice_rank4", "slice_rank2", "strided_slice_step2_3", "strided_slice_negative_step", "strided_slice_shrink_axis",
    "strided_slice_rank3_negative_begin",
    "split_axis2_three", "split_axis_last_two_rank2", "split_v_axis1_sizes", "split_v_axis3_inferred", "unpack_axis1",
    "unpack_axis0_rank4",
    "tanh_op", "tanh_skewed_range",
    "hard_swish_op", "hard_swish_wide_range", "hard_swish_positive", "hard_swish_small_range",
    "prelu_channel_alpha", "prelu_full_alpha",
    "concat_axis3_same_range", "concat_axis1_three_ranges", "concat_rank2_axis_neg1",
    "sum_hw_keepdims", "sum_c_nokeepdims", "sum_h_positive_range", "sum_rank2_last",
    "relu_op", "relu_n1_to_1_op", "relu6_same_scale", "leaky_relu_op", "depth_to_space_b2", "space_to_depth_b2", "padv2_value",
]


@pytest.mark.parametrize("name", MODELS)
def test_new_op_bit_exact_on_cortex_m4(name):
    report = validate(OPS_DIR / f"{name}.tflite", count=1, seed=2, kernels="mcugen", kernel_target="armv7em-dsp",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386" and report.oracles
    assert report.bit_exact, report.per_run
