import numpy as np

from training.data import Augmentation, CropSet, FaceBatches


def test_augmentation_keeps_the_shape_and_changes_the_pixels(prepared):
    crop = CropSet.load(prepared).image(0)
    rng = np.random.default_rng(0)
    augmented = [Augmentation().apply(crop, rng) for _ in range(4)]
    for image in augmented:
        assert image.shape == crop.shape and image.dtype == np.uint8
        assert np.abs(image.astype(int) - crop).mean() > 2
    assert np.abs(augmented[0].astype(int) - augmented[1]).mean() > 1


def test_no_augmentation_settings_leave_the_crop_alone(prepared):
    crop = CropSet.load(prepared).image(0)
    still = Augmentation(max_rotation_deg=0, min_crop_share=1.0, max_hue_shift_deg=0,
                         saturation_range=(1.0, 1.0), flip=False)
    # Only the HSV round trip's rounding remains.
    assert np.abs(still.apply(crop, np.random.default_rng(0)).astype(int) - crop).max() <= 8


def test_triplet_batches_hold_several_images_of_each_person(prepared):
    batches = FaceBatches(CropSet.load(prepared), batch_size=12, people_per_batch=4,
                          workers=1)
    images, labels = batches[0]
    assert images.shape == (12, 112, 112, 3) and images.dtype == np.float32
    people, counts = np.unique(labels, return_counts=True)
    assert len(people) == 4 and set(counts) == {3}


def test_a_resumed_epoch_draws_the_same_batches(prepared):
    crops = CropSet.load(prepared)
    first = FaceBatches(crops, batch_size=12, workers=1)
    first.set_epoch(3)
    again = FaceBatches(crops, batch_size=12, workers=1)
    again.set_epoch(3)
    assert np.array_equal(first[1][1], again[1][1])
    assert np.array_equal(first[1][0], again[1][0])
    again.set_epoch(4)
    assert not np.array_equal(first.rows(0), again.rows(0))
